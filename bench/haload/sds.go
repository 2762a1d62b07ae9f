package main

// SDS clients for the rotation phase: one stream per data plane, as Envoy
// holds it (SotW, both secrets by name, every response ACKed), spread over
// the instances. The same client as bench/loadcp's, reduced to what this
// tool measures.

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

type sdsClient struct {
	name, token string
	firstCert   []byte
	rotatedAt   time.Time
	err         error
}

type sdsLoad struct {
	conns             []*grpc.ClientConn
	gotFirst, rotated atomic.Int64
	failed            atomic.Int64
	wg                sync.WaitGroup
}

const streamsPerConn = 100

// startSDS opens one stream per client on addr, streamsPerConn per gRPC
// connection, until ctx ends.
func startSDS(ctx context.Context, addr string, caPEM []byte, clients []*sdsClient) (*sdsLoad, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("SDS server CA holds no PEM certificate")
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	l := &sdsLoad{}
	for i := 0; i < len(clients); i += streamsPerConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, err
		}
		l.conns = append(l.conns, cc)
	}
	sem := make(chan struct{}, 128) // streams awaiting their first secrets
	for i, c := range clients {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return l, ctx.Err()
		}
		cli := secretv3.NewSecretDiscoveryServiceClient(l.conns[i/streamsPerConn])
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { <-sem }) }
			defer release()
			if c.err = l.stream(ctx, cli, c, release); c.err != nil {
				l.failed.Add(1)
			}
		}()
	}
	return l, nil
}

func (l *sdsLoad) stream(ctx context.Context, cli secretv3.SecretDiscoveryServiceClient, c *sdsClient, opened func()) error {
	sctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	st, err := cli.StreamSecrets(sctx)
	if err != nil {
		return ignoreEnd(ctx, err)
	}
	node := &corev3.Node{Id: sds.NodeID("default", c.name)}
	names := []string{sds.IdentityCertName("default"), sds.MeshCAName("default")}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL}); err != nil {
		return ignoreEnd(ctx, err)
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return ignoreEnd(ctx, fmt.Errorf("dataplane %s: %w", c.name, err))
		}
		now := time.Now()
		var chain []byte
		for _, r := range resp.GetResources() {
			var s tlsv3.Secret
			if err := r.UnmarshalTo(&s); err == nil && s.GetName() == names[0] {
				chain = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
			}
		}
		switch {
		case chain == nil:
		case c.firstCert == nil:
			c.firstCert = chain
			l.gotFirst.Add(1)
			opened()
		case c.rotatedAt.IsZero() && !bytes.Equal(chain, c.firstCert):
			c.rotatedAt = now
			l.rotated.Add(1)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			return ignoreEnd(ctx, err)
		}
	}
}

func ignoreEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (l *sdsLoad) close() {
	l.wg.Wait()
	for _, cc := range l.conns {
		_ = cc.Close()
	}
}
