// Package sdsload holds SDS streams the way Envoy does (SotW, both secrets
// by name, every response ACKed), many multiplexed over a bounded number of
// gRPC connections, and records when each received its first certificate
// and its first different one: the load tools' simulated data planes.
package sdsload

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"meshca/pkg/sds"
)

// Client is one simulated data plane holding an SDS stream the way Envoy
// does (SotW, both secrets by name, every response ACKed).
type Client struct {
	Mesh, Name, Token string

	// Written by the client's goroutine only; read after it has finished.
	FirstAt   time.Time // first response carrying the identity certificate
	FirstCert []byte
	RotatedAt time.Time // first response with a different identity certificate
	Responses int
	Err       error
}

// Load runs many Clients multiplexed over a bounded number of gRPC
// connections.
type Load struct {
	clients []*Client
	conns   []*grpc.ClientConn

	GotFirst atomic.Int64
	Rotated  atomic.Int64
	Failed   atomic.Int64

	wg sync.WaitGroup
}

// Start dials ceil(len(clients)/perConn) connections and opens one stream
// per client, at most openLimit awaiting their first response at a time.
// Streams run until ctx is done.
func Start(ctx context.Context, addr string, caPEM []byte, clients []*Client, perConn, openLimit int) (*Load, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("SDS server CA file holds no PEM certificate")
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	l := &Load{clients: clients}
	nConns := (len(clients) + perConn - 1) / perConn
	for range nConns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("dial SDS %s: %w", addr, err)
		}
		l.conns = append(l.conns, cc)
	}
	sem := make(chan struct{}, openLimit)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i, c := range clients {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			cli := secretv3.NewSecretDiscoveryServiceClient(l.conns[i/perConn])
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				released := false
				release := func() {
					if !released {
						released = true
						<-sem
					}
				}
				defer release()
				c.Err = l.stream(ctx, cli, c, release)
				if c.Err != nil {
					l.Failed.Add(1)
				}
			}()
		}
	}()
	return l, nil
}

// stream runs one client's stream until ctx ends (nil) or it fails.
func (l *Load) stream(ctx context.Context, cli secretv3.SecretDiscoveryServiceClient, c *Client, opened func()) error {
	// Like Envoy's, the stream has no deadline (ctx's would travel as
	// grpc-timeout and cost the server a timer per stream); it ends with ctx.
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.WithoutCancel(ctx), "authorization", "Bearer "+c.Token))
	stopOnEnd := context.AfterFunc(ctx, cancel)
	defer stopOnEnd()
	defer cancel()
	st, err := cli.StreamSecrets(sctx)
	if err != nil {
		return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: open stream: %w", c.Name, err))
	}
	node := &corev3.Node{Id: sds.NodeID(c.Mesh, c.Name)}
	names := []string{sds.IdentityCertName(c.Mesh), sds.MeshCAName(c.Mesh)}
	certName := sds.IdentityCertName(c.Mesh)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL}); err != nil {
		return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: send request: %w", c.Name, err))
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: %w", c.Name, err))
		}
		now := time.Now()
		c.Responses++
		var chain []byte
		for _, r := range resp.GetResources() {
			var s tlsv3.Secret
			if err := r.UnmarshalTo(&s); err != nil {
				return fmt.Errorf("dataplane %s: decode secret: %w", c.Name, err)
			}
			if s.GetName() == certName {
				chain = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
			}
		}
		switch {
		case chain == nil:
		case c.FirstCert == nil:
			c.FirstAt, c.FirstCert = now, chain
			l.GotFirst.Add(1)
			opened()
		case c.RotatedAt.IsZero() && !bytes.Equal(chain, c.FirstCert):
			c.RotatedAt = now
			l.Rotated.Add(1)
		}
		ack := &discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if err := st.Send(ack); err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: send ACK: %w", c.Name, err))
		}
	}
}

// ignoreCanceled maps errors caused by the end of ctx to nil.
func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Wait returns once every stream has ended (ctx of Start done), then
// closes the connections.
func (l *Load) Wait() {
	l.wg.Wait()
	l.Close()
}

// Close closes the connections (the streams end with them).
func (l *Load) Close() {
	for _, cc := range l.conns {
		_ = cc.Close()
	}
}

// FirstErrors returns up to n distinct stream errors.
func (l *Load) FirstErrors(n int) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range l.clients {
		if c.Err == nil || seen[c.Err.Error()] {
			continue
		}
		seen[c.Err.Error()] = true
		out = append(out, c.Err.Error())
		if len(out) == n {
			break
		}
	}
	return out
}
