package authn

import (
	"net"
	"net/netip"
	"strings"
)

// IsLoopbackAddr reports whether addr ("host:port" or a bare IP, as in
// http.Request.RemoteAddr) is a loopback IP address.
func IsLoopbackAddr(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil && ip.Unmap().IsLoopback()
}

// IsLoopbackHost reports whether a Host header ("localhost:5681",
// "127.0.0.1", "[::1]:5681") names this machine's loopback interface: the
// name localhost (or a name under .localhost, which resolvers must map to
// loopback, RFC 6761) or a loopback IP address. Any other name may be a DNS
// name an attacker's page rebound to 127.0.0.1.
func IsLoopbackHost(hostHeader string) bool {
	host := hostHeader
	if h, _, err := net.SplitHostPort(hostHeader); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false
	}
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// IsLoopbackBind reports whether a listen address ("127.0.0.1:5681",
// "localhost:0", "[::1]:5681") binds only the loopback interface. An empty
// host (":5681") binds every interface.
func IsLoopbackBind(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return false
	}
	return IsLoopbackHost(host)
}
