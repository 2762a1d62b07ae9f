package main

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

// sdsClient is one simulated data plane holding an SDS stream the way Envoy
// does (SotW, both secrets by name, every response ACKed).
type sdsClient struct {
	mesh, name, token string

	// Written by the client's goroutine only; read after it has finished.
	firstAt   time.Time // first response carrying the identity certificate
	firstCert []byte
	rotatedAt time.Time // first response with a different identity certificate
	responses int
	err       error
}

// sdsLoad runs many sdsClients multiplexed over a bounded number of gRPC
// connections.
type sdsLoad struct {
	clients []*sdsClient
	conns   []*grpc.ClientConn

	gotFirst atomic.Int64
	rotated  atomic.Int64
	failed   atomic.Int64

	wg sync.WaitGroup
}

// startSDS dials ceil(len(clients)/perConn) connections and opens one stream
// per client, at most openLimit awaiting their first response at a time.
// Streams run until ctx is done.
func startSDS(ctx context.Context, addr string, caPEM []byte, clients []*sdsClient, perConn, openLimit int) (*sdsLoad, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("SDS server CA file holds no PEM certificate")
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	l := &sdsLoad{clients: clients}
	nConns := (len(clients) + perConn - 1) / perConn
	for range nConns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			l.close()
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
				c.err = l.stream(ctx, cli, c, release)
				if c.err != nil {
					l.failed.Add(1)
				}
			}()
		}
	}()
	return l, nil
}

// stream runs one client's stream until ctx ends (nil) or it fails.
func (l *sdsLoad) stream(ctx context.Context, cli secretv3.SecretDiscoveryServiceClient, c *sdsClient, opened func()) error {
	// Like Envoy's, the stream has no deadline (ctx's would travel as
	// grpc-timeout and cost the server a timer per stream); it ends with ctx.
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.WithoutCancel(ctx), "authorization", "Bearer "+c.token))
	stopOnEnd := context.AfterFunc(ctx, cancel)
	defer stopOnEnd()
	defer cancel()
	st, err := cli.StreamSecrets(sctx)
	if err != nil {
		return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: open stream: %w", c.name, err))
	}
	node := &corev3.Node{Id: sds.NodeID(c.mesh, c.name)}
	names := []string{sds.IdentityCertName(c.mesh), sds.MeshCAName(c.mesh)}
	certName := sds.IdentityCertName(c.mesh)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL}); err != nil {
		return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: send request: %w", c.name, err))
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: %w", c.name, err))
		}
		now := time.Now()
		c.responses++
		var chain []byte
		for _, r := range resp.GetResources() {
			var s tlsv3.Secret
			if err := r.UnmarshalTo(&s); err != nil {
				return fmt.Errorf("dataplane %s: decode secret: %w", c.name, err)
			}
			if s.GetName() == certName {
				chain = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
			}
		}
		switch {
		case chain == nil:
		case c.firstCert == nil:
			c.firstAt, c.firstCert = now, chain
			l.gotFirst.Add(1)
			opened()
		case c.rotatedAt.IsZero() && !bytes.Equal(chain, c.firstCert):
			c.rotatedAt = now
			l.rotated.Add(1)
		}
		ack := &discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if err := st.Send(ack); err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("dataplane %s: send ACK: %w", c.name, err))
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

// wait returns once every stream has ended (ctx of startSDS done), then
// closes the connections.
func (l *sdsLoad) wait() {
	l.wg.Wait()
	l.close()
}

func (l *sdsLoad) close() {
	for _, cc := range l.conns {
		_ = cc.Close()
	}
}

// firstErrors returns up to n distinct stream errors.
func (l *sdsLoad) firstErrors(n int) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range l.clients {
		if c.err == nil || seen[c.err.Error()] {
			continue
		}
		seen[c.err.Error()] = true
		out = append(out, c.err.Error())
		if len(out) == n {
			break
		}
	}
	return out
}
