package dpagent

// Failover: several control-plane addresses, and names with several
// records. A broken stream moves the agent to the next instance; the files
// it holds stay in place meanwhile (they are only ever replaced by newer
// secrets), so a proxy keeps serving its certificate through the move.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// addresses returns the configured control-plane addresses: CPAddresses,
// then CPAddress, each possibly a comma-separated list, without repeats.
func (c Config) addresses() ([]string, error) {
	var out []string
	for _, a := range append(slices.Clone(c.CPAddresses), c.CPAddress) {
		for _, part := range strings.Split(a, ",") {
			part = strings.TrimSpace(part)
			if part == "" || slices.Contains(out, part) {
				continue
			}
			if _, port, err := net.SplitHostPort(part); err != nil || port == "" {
				return nil, fmt.Errorf("dpagent: control-plane address %q: want host:port", part)
			}
			out = append(out, part)
		}
	}
	return out, nil
}

// endpoint is one instance to dial: an address, and the name its
// certificate must be valid for.
type endpoint struct {
	dial, serverName string
}

// lookupTimeout bounds one DNS lookup of a control-plane name.
const lookupTimeout = 2 * time.Second

// endpoints expands the addresses: a name with several records gives one
// endpoint per record (looked up on every round, so a changed record set
// is followed); a name that does not resolve is dialed as is.
func endpoints(ctx context.Context, addrs []string, lookup func(context.Context, string) ([]string, error)) []endpoint {
	var out []endpoint
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		if net.ParseIP(host) != nil || lookup == nil {
			out = append(out, endpoint{dial: a, serverName: host})
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		ips, err := lookup(lctx, host)
		cancel()
		if err != nil || len(ips) < 2 {
			out = append(out, endpoint{dial: a, serverName: host})
			continue
		}
		slices.Sort(ips) // a stable order, whatever order the resolver answers in
		for _, ip := range ips {
			out = append(out, endpoint{dial: net.JoinHostPort(ip, port), serverName: host})
		}
	}
	return out
}

// clients keeps one gRPC connection per endpoint dialed.
type clients struct {
	cfg   Config
	pool  *x509.CertPool
	conns map[endpoint]*grpc.ClientConn
}

func (c *clients) get(ep endpoint) (secretv3.SecretDiscoveryServiceClient, error) {
	if cc, ok := c.conns[ep]; ok {
		return secretv3.NewSecretDiscoveryServiceClient(cc), nil
	}
	cc, err := grpc.NewClient(ep.dial,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: c.pool, ServerName: ep.serverName, MinVersion: tls.VersionTLS12})),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: c.cfg.InitialBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.cfg.MaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dpagent: %w", err)
	}
	c.conns[ep] = cc
	return secretv3.NewSecretDiscoveryServiceClient(cc), nil
}

func (c *clients) close() {
	for _, cc := range c.conns {
		_ = cc.Close()
	}
}
