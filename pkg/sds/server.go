package sds

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DefaultReverifyInterval is how often open streams re-verify their token.
const DefaultReverifyInterval = time.Minute

// shutdownGrace bounds GracefulStop before open streams are cut.
const shutdownGrace = 5 * time.Second

// Option configures a Server.
type Option func(*Server)

// WithReverifyInterval sets how often an open stream's token is re-verified
// (in addition to before every push). 0 disables the periodic check.
func WithReverifyInterval(d time.Duration) Option {
	return func(s *Server) { s.reverify = d }
}

// WithClock sets the clock used for metrics (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// Server is an SDS server. Create it with NewServer; it may Serve (or be
// Registered on) several gRPC servers in turn, sharing its connection state.
type Server struct {
	src      Source
	auth     Authenticator
	log      *slog.Logger
	now      func() time.Time
	reverify time.Duration
	cache    cachev3.SnapshotCache

	connections prometheus.Gauge
	pushes      prometheus.Counter
	latency     prometheus.Histogram

	mu    sync.Mutex
	nodes map[string]*node // by node id; guarded by mu
}

// NewServer returns a Server serving secrets from src to dataplanes
// authenticated by auth. Metrics are registered on reg (none if nil); it
// panics if they are already registered there, as prometheus.MustRegister.
func NewServer(src Source, auth Authenticator, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		src:      src,
		auth:     auth,
		log:      logger,
		now:      time.Now,
		reverify: DefaultReverifyInterval,
		nodes:    make(map[string]*node),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshca_sds_connections",
			Help: "Open, authenticated SDS streams.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshca_sds_pushes_total",
			Help: "SDS responses sent to data planes.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshca_sds_push_latency_seconds",
			Help:    "Time from a secret change signalled by the source to the response carrying it being sent.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
	}
	for _, o := range opts {
		o(s)
	}
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, xdsLogger{s.log})
	if reg != nil {
		reg.MustRegister(s.connections, s.pushes, s.latency)
	}
	return s
}

// Register adds the SDS service to gs. Streams end (codes.Unavailable) when
// ctx is done.
func (s *Server) Register(ctx context.Context, gs *grpc.Server) {
	secretv3.RegisterSecretDiscoveryServiceServer(gs, &handler{
		s:        s,
		sotw:     sotwv3.NewServer(ctx, s.cache, nil, sotwv3.WithLogger(xdsLogger{s.log})),
		delta:    deltav3.NewServer(ctx, s.cache, nil, deltav3.WithLogger(xdsLogger{s.log})),
		serveCtx: ctx,
	})
}

// Serve serves SDS over TLS on lis until ctx is done, then stops gracefully
// (open streams are told to go away and have shutdownGrace to finish).
func (s *Server) Serve(ctx context.Context, lis net.Listener, tlsConf *tls.Config) error {
	if tlsConf == nil {
		return errors.New("sds: serve: a TLS configuration is required (tokens are bearer credentials)")
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	// sctx also ends if gs.Serve fails, so streams and the stopper end too.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.Register(sctx, gs)

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-sctx.Done()
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		t := time.NewTimer(shutdownGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			gs.Stop()
			<-done
		}
	}()
	s.log.Info("SDS server listening", "address", lis.Addr().String())
	err := gs.Serve(lis)
	cancel()
	<-stopped
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("sds: serve: %w", err)
}

// node is the shared state of all streams of one dataplane.
type node struct {
	id, mesh, name string
	refs           int // guarded by Server.mu
	stop           context.CancelFunc
	done           chan struct{}

	mu       sync.Mutex
	seq      uint64    // number of source signals
	signalAt time.Time // time of the last signal
}

// acquire returns the node of mesh/name, starting its source subscription
// if it is the first stream of that dataplane.
func (s *Server) acquire(mesh, name string) *node {
	id := NodeID(mesh, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.nodes[id]; ok {
		n.refs++
		return n
	}
	ctx, stop := context.WithCancel(context.Background())
	n := &node{id: id, mesh: mesh, name: name, refs: 1, stop: stop, done: make(chan struct{})}
	s.nodes[id] = n
	ch, cancel := s.src.Subscribe(mesh, name)
	s.refresh(n) // before returning, so a stream finds the snapshot at once
	go s.watch(ctx, n, ch, cancel)
	return n
}

// release drops a stream's reference; the last one stops the subscription
// and forgets the snapshot. Done under s.mu so that a concurrent acquire of
// the same dataplane cannot have its fresh snapshot cleared.
func (s *Server) release(n *node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n.refs--
	if n.refs > 0 {
		return
	}
	delete(s.nodes, n.id)
	n.stop()
	<-n.done // the watcher never takes s.mu
	s.cache.ClearSnapshot(n.id)
}

func (s *Server) watch(ctx context.Context, n *node, ch <-chan struct{}, cancel func()) {
	defer close(n.done)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			n.mu.Lock()
			n.seq++
			n.signalAt = s.now()
			n.mu.Unlock()
			s.refresh(n)
		}
	}
}

// refresh sets the node's snapshot from the source's current secrets.
func (s *Server) refresh(n *node) {
	sec, ok := s.src.Current(n.mesh, n.name)
	if !ok {
		return
	}
	snap, err := snapshot(n.mesh, sec)
	if err != nil {
		s.log.Error("cannot build SDS snapshot", "node", n.id, "error", err)
		return
	}
	if err := s.cache.SetSnapshot(context.Background(), n.id, snap); err != nil {
		s.log.Error("cannot set SDS snapshot", "node", n.id, "error", err)
		return
	}
	s.log.Debug("SDS snapshot set", "node", n.id, "source_version", sec.Version, "version", snap.GetVersion(resource.SecretType))
}

func snapshot(mesh string, sec Secrets) (*cachev3.Snapshot, error) {
	h := sha256.New()
	for _, b := range [][]byte{sec.CertChainPEM, sec.KeyPEM, sec.TrustBundlePEM} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	version := hex.EncodeToString(h.Sum(nil)[:12])
	return cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.SecretType: {
			&tlsv3.Secret{
				Name: IdentityCertName(mesh),
				Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.CertChainPEM}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.KeyPEM}},
				}},
			},
			&tlsv3.Secret{
				Name: MeshCAName(mesh),
				Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.TrustBundlePEM}},
				}},
			},
		},
	})
}

// conn is one authenticated stream.
type conn struct {
	s      *Server
	n      *node
	token  string
	ctx    context.Context
	cancel context.CancelCauseFunc

	sawNode bool   // recv side only
	seenSeq uint64 // send side only
}

// open authenticates a new stream and attaches it to its dataplane's node.
func (s *Server) open(ctx context.Context) (*conn, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	mesh, name, err := s.auth.Verify(ctx, token)
	if err != nil {
		s.log.Info("SDS stream refused", "reason", err)
		return nil, authStatus(err)
	}
	c := &conn{s: s, token: token}
	c.ctx, c.cancel = context.WithCancelCause(ctx)
	c.n = s.acquire(mesh, name)
	c.n.mu.Lock()
	c.seenSeq = c.n.seq
	c.n.mu.Unlock()
	s.connections.Inc()
	s.log.Info("SDS stream opened", "node", c.n.id)
	if s.reverify > 0 {
		go c.reverifyLoop(s.reverify)
	}
	return c, nil
}

func (c *conn) close() {
	c.cancel(context.Canceled)
	c.s.release(c.n)
	c.s.connections.Dec()
	c.s.log.Info("SDS stream closed", "node", c.n.id)
}

// verify re-checks the stream's token; a rejection ends the stream.
func (c *conn) verify() error {
	_, _, err := c.s.auth.Verify(c.ctx, c.token)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrRejected) {
		if c.ctx.Err() == nil {
			c.s.log.Warn("cannot re-verify dataplane token; keeping the stream", "node", c.n.id, "error", err)
		}
		return nil
	}
	c.s.log.Info("closing SDS stream: dataplane token no longer valid", "node", c.n.id, "reason", err)
	st := status.Errorf(codes.Unauthenticated, "dataplane token no longer valid: %v", err)
	c.cancel(st)
	return st
}

func (c *conn) reverifyLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if c.verify() != nil {
				return
			}
		}
	}
}

// checkNode enforces that the node id is the token's dataplane.
func (c *conn) checkNode(n *corev3.Node) error {
	if n == nil {
		if !c.sawNode {
			return status.Error(codes.InvalidArgument, "the first request must carry the node (id <mesh>.<name>)")
		}
		return nil
	}
	c.sawNode = true
	if n.GetId() != c.n.id {
		return status.Errorf(codes.PermissionDenied,
			"node id %q does not match the dataplane token, which is for dataplane %q of mesh %q (node id must be %q)",
			n.GetId(), c.n.name, c.n.mesh, c.n.id)
	}
	return nil
}

func (c *conn) sent() {
	c.s.pushes.Inc()
	c.n.mu.Lock()
	seq, at := c.n.seq, c.n.signalAt
	c.n.mu.Unlock()
	if seq > c.seenSeq {
		c.seenSeq = seq
		c.s.latency.Observe(c.s.now().Sub(at).Seconds())
	}
}

// result turns the xDS handler's outcome into the stream's status.
func (c *conn) result(serveCtx context.Context, err error) error {
	var se interface{ GRPCStatus() *status.Status }
	if cause := context.Cause(c.ctx); cause != nil && errors.As(cause, &se) {
		return cause
	}
	if err == nil && serveCtx.Err() != nil {
		return status.Error(codes.Unavailable, "control plane is shutting down")
	}
	return err
}

func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", status.Error(codes.Unauthenticated, "missing dataplane token (gRPC metadata \"authorization: Bearer <token>\")")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", status.Error(codes.Unauthenticated, "malformed authorization metadata: want \"Bearer <token>\"")
	}
	return tok, nil
}

func authStatus(err error) error {
	if errors.Is(err, ErrRejected) {
		return status.Errorf(codes.Unauthenticated, "dataplane token refused: %v", err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "cannot verify dataplane token now: %v", err)
}

// handler implements the generated SDS service on one gRPC server.
type handler struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	s        *Server
	sotw     sotwv3.Server
	delta    deltav3.Server
	serveCtx context.Context
}

func (h *handler) StreamSecrets(ss secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	c, err := h.s.open(ss.Context())
	if err != nil {
		return err
	}
	defer c.close()
	g := newGuarded(c, ss, ss.Recv, ss.Send)
	return c.result(h.serveCtx, h.sotw.StreamHandler(g, resource.SecretType))
}

func (h *handler) DeltaSecrets(ss secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	c, err := h.s.open(ss.Context())
	if err != nil {
		return err
	}
	defer c.close()
	g := newGuarded(c, ss, ss.Recv, ss.Send)
	return c.result(h.serveCtx, h.delta.DeltaStreamHandler(g, resource.SecretType))
}

func (h *handler) FetchSecrets(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, status.Error(codes.Unimplemented, "FetchSecrets is not supported; use StreamSecrets or DeltaSecrets")
}

// xdsRequest is what SotW and delta requests have in common.
type xdsRequest interface {
	comparable
	GetNode() *corev3.Node
}

type received[Req any] struct {
	req Req
	err error
}

// guarded wraps a gRPC stream for go-control-plane: it checks the node id of
// requests, re-verifies the token before each send, counts pushes, and lets
// the stream be ended from outside (by cancelling conn.ctx), which the plain
// gRPC stream does not allow while a Recv is blocked.
type guarded[Req xdsRequest, Resp any] struct {
	grpc.ServerStream
	c    *conn
	in   chan received[Req]
	send func(Resp) error
}

func newGuarded[Req xdsRequest, Resp any](c *conn, ss grpc.ServerStream, recv func() (Req, error), send func(Resp) error) *guarded[Req, Resp] {
	g := &guarded[Req, Resp]{ServerStream: ss, c: c, in: make(chan received[Req]), send: send}
	go func() {
		for {
			req, err := recv()
			select {
			case g.in <- received[Req]{req, err}:
			case <-c.ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return g
}

func (g *guarded[Req, Resp]) Context() context.Context { return g.c.ctx }

func (g *guarded[Req, Resp]) Recv() (Req, error) {
	var zero Req
	select {
	case r := <-g.in:
		if r.err != nil {
			return zero, r.err
		}
		if r.req == zero {
			return r.req, nil // go-control-plane rejects it
		}
		if err := g.c.checkNode(r.req.GetNode()); err != nil {
			g.c.s.log.Info("SDS stream refused", "reason", err)
			g.c.cancel(err)
			return zero, err
		}
		return r.req, nil
	case <-g.c.ctx.Done():
		return zero, context.Cause(g.c.ctx)
	}
}

func (g *guarded[Req, Resp]) Send(resp Resp) error {
	if err := g.c.verify(); err != nil {
		return err
	}
	if err := g.send(resp); err != nil {
		return err
	}
	g.c.sent()
	return nil
}

// xdsLogger sends go-control-plane's logs to slog at debug level (warnings
// and errors keep their level).
type xdsLogger struct{ l *slog.Logger }

var _ log.Logger = xdsLogger{}

func (x xdsLogger) Debugf(f string, a ...any) { x.l.Debug("xds: " + fmt.Sprintf(f, a...)) }
func (x xdsLogger) Infof(f string, a ...any)  { x.l.Debug("xds: " + fmt.Sprintf(f, a...)) }
func (x xdsLogger) Warnf(f string, a ...any)  { x.l.Warn("xds: " + fmt.Sprintf(f, a...)) }
func (x xdsLogger) Errorf(f string, a ...any) { x.l.Error("xds: " + fmt.Sprintf(f, a...)) }
