package controlplane

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"meshca/pkg/authn"
	"meshca/pkg/sds"
)

// Files of the API's HTTPS listener under the data directory (its CA is what
// meshctl's --ca-cert-file points at).
const (
	APIServerCAFile      = "api-server-ca.pem"
	DefaultAPITLSAddress = "127.0.0.1:5682"
)

func apiServerFiles() sds.ServerFiles {
	return sds.ServerFiles{CA: APIServerCAFile, CAKey: "api-server-ca.key", Cert: "api-server.pem", CertKey: "api-server.key", Name: "meshca API server"}
}

// apiListeners are the API's two listeners: plain HTTP (loopback unless the
// operator insists) and HTTPS (nil when --api-tls-address is empty).
type apiListeners struct {
	plain, tls net.Listener
}

func (l apiListeners) Close() {
	if l.plain != nil {
		l.plain.Close()
	}
	if l.tls != nil {
		l.tls.Close()
	}
}

// checkPlainAPIAddress refuses a non-loopback plain listener unless the
// operator gave --api-allow-insecure-remote, and warns at every start when
// they did: anyone on the network could then read tokens in transit.
func checkPlainAPIAddress(cfg Config, logger *slog.Logger) error {
	if authn.IsLoopbackBind(cfg.APIAddress) {
		return nil
	}
	if !cfg.APIAllowInsecureRemote {
		return fmt.Errorf("--api-address %q: the plain HTTP API must listen on a loopback address (127.0.0.1, ::1 or localhost); "+
			"serve remote clients on --api-tls-address (HTTPS, default %s), or pass --api-allow-insecure-remote to accept plain HTTP from the network",
			cfg.APIAddress, DefaultAPITLSAddress)
	}
	logger.Warn("the plain HTTP API listens on a non-loopback address (--api-allow-insecure-remote): user tokens sent to it travel unencrypted; prefer --api-tls-address",
		"apiAddress", cfg.APIAddress)
	return nil
}

// listenAPI binds the API listeners. The HTTPS listener serves the operator's
// certificate (--api-tls-cert/--api-tls-key) or one issued by a CA created
// once under the data directory (api-server-ca.pem).
func listenAPI(cfg Config, logger *slog.Logger) (apiListeners, error) {
	var ls apiListeners
	if err := checkPlainAPIAddress(cfg, logger); err != nil {
		return ls, err
	}
	var err error
	if ls.plain, err = net.Listen("tcp", cfg.APIAddress); err != nil {
		return ls, fmt.Errorf("--api-address %q: %w", cfg.APIAddress, err)
	}
	if cfg.APITLSAddress == "" {
		return ls, nil
	}
	host, _, err := net.SplitHostPort(cfg.APITLSAddress)
	if err != nil {
		ls.Close()
		return ls, fmt.Errorf("--api-tls-address %q: %w", cfg.APITLSAddress, err)
	}
	var hosts []string
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		// Every interface: clients will most likely use the machine's name.
		if name, err := os.Hostname(); err == nil && name != "" {
			hosts = append(hosts, name)
		}
	} else {
		hosts = append(hosts, host)
	}
	conf, _, err := sds.LoadOrCreateTLS(apiServerFiles(), cfg.DataDir, cfg.APITLSCert, cfg.APITLSKey, hosts, time.Now)
	if err != nil {
		ls.Close()
		return ls, fmt.Errorf("API HTTPS (--api-tls-cert/--api-tls-key): %w", err)
	}
	conf.NextProtos = []string{"h2", "http/1.1"}
	inner, err := net.Listen("tcp", cfg.APITLSAddress)
	if err != nil {
		ls.Close()
		return ls, fmt.Errorf("--api-tls-address %q: %w", cfg.APITLSAddress, err)
	}
	ls.tls = tls.NewListener(inner, conf)
	return ls, nil
}

func addrOf(l net.Listener) string {
	if l == nil {
		return "off"
	}
	return l.Addr().String()
}
