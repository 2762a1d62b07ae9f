package sds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultReverifyInterval is how often open streams re-verify their token.
const DefaultReverifyInterval = time.Minute

// shutdownGrace bounds how long a shutdown waits for streams to take their status.
const shutdownGrace = 5 * time.Second

// verifyTimeout bounds one re-verification by the shared reverify loop.
const verifyTimeout = 10 * time.Second

// Option configures a Server.
type Option func(*Server)

// WithReverifyInterval sets how often an open stream's token is re-verified
// (in addition to before every push). 0 disables the periodic check.
func WithReverifyInterval(d time.Duration) Option {
	return func(s *Server) { s.reverify = d }
}

// WithClock sets the clock used for metrics and token expiry (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// Server is an SDS server. Create it with NewServer; it may Serve several
// listeners in turn, sharing its stream state.
type Server struct {
	src      Source
	auth     Authenticator
	gauth    GenerationAuthenticator // auth, if it is one
	nauth    NodeAuthenticator       // auth, if it is one: streams are authenticated on their first request
	log      *slog.Logger
	now      func() time.Time
	reverify time.Duration
	nonce    atomic.Uint64

	connections  prometheus.Gauge
	pushes       prometheus.Counter
	latency      prometheus.Histogram
	acceptErrors *prometheus.CounterVec
	transport    prometheus.Gauge

	mu       sync.Mutex
	conns    map[*conn]struct{} // open streams; guarded by mu
	loopStop chan struct{}      // closed to stop the reverify loop; nil if none runs; guarded by mu
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
		conns:    make(map[*conn]struct{}),
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
		transport: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshca_sds_transport_connections",
			Help: "Open data-plane connections (TLS established); each holds a file descriptor.",
		}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshca_sds_accept_errors_total",
			Help: "Failures to accept a data-plane connection, by reason (EMFILE: the process is out of file descriptors; ENFILE: the system is); each is retried.",
		}, []string{"reason"}),
	}
	s.gauth, _ = auth.(GenerationAuthenticator)
	s.nauth, _ = auth.(NodeAuthenticator)
	for _, o := range opts {
		o(s)
	}
	if reg != nil {
		reg.MustRegister(s.connections, s.pushes, s.latency, s.acceptErrors, s.transport)
	}
	return s
}

var errShuttingDown = status.Error(codes.Unavailable, "control plane is shutting down")

// openStreams returns the number of open, authenticated streams.
func (s *Server) openStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// closeAll ends every open stream with err.
func (s *Server) closeAll(err error) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns { // not under mu: ending a stream removes it
		c.end(err)
	}
}

// Serve serves SDS (gRPC over HTTP/2 over TLS, see h2conn.go) on lis
// until ctx is done, then stops: open streams end with codes.Unavailable,
// connections get GOAWAY and have shutdownGrace to take their status
// before they are closed.
func (s *Server) Serve(ctx context.Context, lis net.Listener, tlsConf *tls.Config) error {
	if tlsConf == nil {
		return errors.New("sds: serve: a TLS configuration is required (tokens are bearer credentials)")
	}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{"h2"}
	// sctx also ends if accepting fails, so streams and the keepalive end too.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &h2Server{s: s, ctx: sctx, tls: conf, conns: make(map[*h2Conn]struct{})}
	if usePoller {
		d.poll = newPoller()
	}
	stopClosing := context.AfterFunc(sctx, func() {
		s.closeAll(errShuttingDown)
		_ = lis.Close()
	})
	defer stopClosing()
	go d.keepalive()

	attrs := []any{"address", lis.Addr().String()}
	if soft, _, ok := fileLimit(); ok {
		attrs = append(attrs, "fdLimit", soft)
	}
	s.log.Info("SDS server listening", attrs...)
	al := &acceptListener{Listener: lis, log: s.log, now: s.now, errors: s.acceptErrors, open: s.openStreams}
	var err error
	for {
		nc, aerr := al.Accept()
		if aerr != nil {
			err = aerr
			break
		}
		d.wg.Add(1)
		go d.handle(nc)
	}
	cancel()
	d.shutdown()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("sds: serve: %w", err)
}

// conn is one authenticated stream.
type conn struct {
	s                *Server
	mesh, name, node string
	token            string
	claimed          string          // the node id of the first request (NodeAuthenticator only)
	ctx              context.Context // the stream's; cancelled when it ends
	st               *h2Stream

	sawNode bool // stream goroutine only

	mu    sync.Mutex
	gen   uint64    // authenticator generation before the last successful verification
	genOK bool      // gen is meaningful
	until time.Time // the last verdict lapses then (zero: unknown)
}

// open authenticates a new stream and registers it; node is the node id
// of its first request when the authenticator is a NodeAuthenticator.
func (s *Server) open(st *h2Stream, node string) (*conn, error) {
	token, err := bearerToken(st.authz)
	if err != nil {
		return nil, err
	}
	c := &conn{s: s, token: token, ctx: st.ctx, st: st, claimed: node}
	mesh, name, err := c.check(st.ctx)
	if err != nil {
		s.log.Info("SDS stream refused", "reason", err)
		return nil, authStatus(err)
	}
	c.mesh, c.name, c.node = mesh, name, NodeID(mesh, name)
	if err := s.servable(st.ctx, mesh, name); err != nil {
		return nil, err
	}
	s.add(c)
	s.connections.Inc()
	s.log.Info("SDS stream opened", "node", c.node)
	return c, nil
}

// servable asks the source whether mesh/name can be served and, if not,
// logs why and returns the status the stream ends with.
func (s *Server) servable(ctx context.Context, mesh, name string) error {
	sc, ok := s.src.(ServableChecker)
	if !ok {
		return nil
	}
	err := sc.Servable(ctx, mesh, name)
	if err == nil {
		return nil
	}
	code := codes.FailedPrecondition
	if errors.Is(err, ErrDataplaneNotFound) {
		code = codes.NotFound
	}
	s.log.Warn("SDS stream refused: nothing to serve this dataplane", "node", NodeID(mesh, name), "code", code.String(), "reason", err)
	return status.Error(code, err.Error())
}

// end ends the stream from outside its worker with err, a status error.
// It may be called from any goroutine, more than once (the first status
// stays).
func (c *conn) end(err error) { c.st.end(err, true) }

func (c *conn) close() {
	c.s.remove(c)
	c.s.connections.Dec()
	c.s.log.Info("SDS stream closed", "node", c.node)
}

// check verifies the token, recording the verdict's generation and expiry.
func (c *conn) check(ctx context.Context) (mesh, name string, err error) {
	g := c.s.gauth
	if n := c.s.nauth; n != nil {
		var gen uint64
		var genOK bool
		if g != nil {
			gen, genOK = g.Generation(c.mesh)
		}
		mesh, name, until, err := n.VerifyNode(ctx, c.token, c.claimed)
		if err != nil {
			return "", "", err
		}
		c.mu.Lock()
		c.gen, c.genOK, c.until = gen, genOK, until
		c.mu.Unlock()
		return mesh, name, nil
	}
	if g == nil {
		mesh, name, err = c.s.auth.Verify(ctx, c.token)
		return mesh, name, err
	}
	// Before verifying: a change after this read gives a larger generation.
	// Before the first verification the mesh is unknown: "" is all meshes.
	gen, genOK := g.Generation(c.mesh)
	mesh, name, until, err := g.VerifyUntil(ctx, c.token)
	if err != nil {
		return "", "", err
	}
	c.mu.Lock()
	c.gen, c.genOK, c.until = gen, genOK, until
	c.mu.Unlock()
	return mesh, name, nil
}

// fresh reports whether the last verdict still holds without asking the
// authenticator again.
func (c *conn) fresh() bool {
	g := c.s.gauth
	if g == nil {
		return false
	}
	gen, ok := g.Generation(c.mesh)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.genOK && gen <= c.gen && !c.until.IsZero() && c.s.now().Before(c.until)
}

// verify re-checks the stream's token; a rejection ends the stream.
func (c *conn) verify(ctx context.Context) error {
	_, _, err := c.check(ctx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrRejected) {
		if c.ctx.Err() == nil {
			c.s.log.Warn("cannot re-verify dataplane token; keeping the stream", "node", c.node, "error", err)
		}
		return nil
	}
	c.s.log.Info("closing SDS stream: dataplane token no longer valid", "node", c.node, "reason", err)
	st := status.Errorf(codes.Unauthenticated, "dataplane token no longer valid: %v", err)
	c.end(st)
	return st
}

// verifyBeforeSend re-verifies the token unless the last verdict provably holds.
func (c *conn) verifyBeforeSend() error {
	if c.fresh() {
		return nil
	}
	return c.verify(c.ctx)
}

// add adds c to the open streams, starting the shared reverify loop
// with the first one.
func (s *Server) add(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	if s.reverify > 0 && s.loopStop == nil {
		s.loopStop = make(chan struct{})
		go s.reverifyLoop(s.loopStop)
	}
}

// remove removes c; the loop stops with the last stream.
func (s *Server) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.loopStop != nil {
		close(s.loopStop)
		s.loopStop = nil
	}
}

// reverifyLoop re-verifies every open stream's token each interval: one
// goroutine and one ticker for all streams.
func (s *Server) reverifyLoop(stop <-chan struct{}) {
	t := time.NewTicker(s.reverify)
	defer t.Stop()
	var changed <-chan struct{}
	if cn, ok := s.auth.(ChangeNotifier); ok {
		changed = cn.Changed()
	}
	var batch []*conn
	for {
		// With a GenerationAuthenticator, a verdict goes stale only when
		// the generation moves (revocation, signing-key change) or the
		// token expires, and fresh() tells: the periodic pass then checks
		// those streams only, instead of one signature check per stream
		// and interval (10,000 RSA verifications a minute at 10,000 data
		// planes). Without one, every stream is re-verified.
		onlyStale := s.gauth != nil
		select {
		case <-stop:
			return
		case <-t.C:
		case <-changed:
			onlyStale = true // a revocation or key change: check the streams it may affect
		}
		s.mu.Lock()
		for c := range s.conns {
			batch = append(batch, c)
		}
		s.mu.Unlock()
		for i, c := range batch {
			batch[i] = nil
			select {
			case <-stop:
				return
			default:
			}
			if c.ctx.Err() != nil || (onlyStale && c.fresh()) {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, verifyTimeout)
			_ = c.verify(ctx)
			cancel()
		}
		batch = batch[:0]
	}
}

// checkNode enforces that the node id is the token's dataplane.
func (c *conn) checkNode(id string, present bool) error {
	if !present {
		if !c.sawNode {
			return status.Error(codes.InvalidArgument, "the first request must carry the node (id <mesh>.<name>)")
		}
		return nil
	}
	c.sawNode = true
	if id != c.node {
		return status.Errorf(codes.PermissionDenied,
			"node id %q does not match the dataplane token, which is for dataplane %q of mesh %q (node id must be %q)",
			id, c.name, c.mesh, c.node)
	}
	return nil
}

// bearerToken takes the token from an authorization header value.
func bearerToken(authz string) (string, error) {
	if authz == "" {
		return "", status.Error(codes.Unauthenticated, "missing dataplane token (gRPC metadata \"authorization: Bearer <token>\")")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(authz), " ")
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
