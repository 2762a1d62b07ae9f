// Package dpagent is the data-plane agent: it fetches a dataplane's mTLS
// certificate, key and trust bundle from the control plane over SDS and keeps
// them up to date on disk for a proxy or application that is not Envoy.
//
// It speaks the SotW SecretDiscoveryService like Envoy: node id
// `<mesh>.<name>`, both secrets requested by name, every response ACKed
// (version_info + response_nonce) or NACKed (previous version + error_detail)
// when its content is unusable. The dataplane token travels in gRPC metadata
// (`authorization: Bearer <token>`) over TLS.
//
// # Files
//
// In the output directory: cert.pem (leaf then chain, 0644), key.pem (0600)
// and ca.pem (trust bundle, 0644). Each is written atomically (temporary file
// in the same directory, fsync, rename, directory fsync), and only when its
// content changed. Within one update the order is ca.pem, key.pem, then
// cert.pem: cert.pem changes last, so a reader that watches cert.pem and then
// reads key.pem always gets the matching key. (Three files cannot be swapped
// in one atomic step; a reader polling key.pem first may briefly see a new key
// with the old certificate and should retry on a mismatch — or rely on the
// --on-rotate hook, which runs after all three are in place.)
//
// # Connection
//
// A broken stream or an unreachable control plane is retried with jittered
// exponential backoff (capped at MaxBackoff, 5 s by default). A refused token
// (codes.Unauthenticated or codes.PermissionDenied) is permanent: Run returns
// an error wrapping ErrRefused without retrying. A control plane that has
// nothing to serve this dataplane (codes.NotFound: it is not registered;
// codes.FailedPrecondition: its mesh has no mTLS) is retried, since the
// operator may fix it, with backoff up to MaxNotServedBackoff (15 s); the
// reason is logged once each time it changes, not on every attempt. The token is re-read for
// every connection attempt, so a replaced token file is picked up; a token
// refused is final unless it has been replaced since it was sent.
package dpagent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshca/pkg/atomicfile"
	"meshca/pkg/sds"
)

// Output file names.
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
	CAFile   = "ca.pem"
)

// EnvOut is the environment variable giving the hook the output directory.
const EnvOut = "MESHCA_DP_OUT"

// Defaults.
const (
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	// DefaultMaxNotServedBackoff: a dataplane registered or a mesh given
	// mTLS is noticed within this.
	DefaultMaxNotServedBackoff = 15 * time.Second
	DefaultHookTimeout         = 2 * time.Minute
)

// ErrRefused is wrapped by Run's error when the control plane refused the
// dataplane token: retrying with the same token cannot succeed.
var ErrRefused = errors.New("control plane refused the dataplane token")

// ErrUntrusted is wrapped by Run's error when the control plane's
// certificate did not verify against CACertPEM PermanentErrorLimit times in
// a row.
var ErrUntrusted = errors.New("the control plane's certificate does not verify against the given CA")

// Config configures the agent.
type Config struct {
	// CPAddress is the control plane's SDS address (host:port), or several
	// separated by commas.
	CPAddress string
	// CPAddresses are more control-plane instances: the agent streams from
	// one at a time and moves to the next when its stream breaks. A name
	// with several DNS records counts as one instance per record.
	CPAddresses []string
	// LookupHost resolves control-plane names (net.DefaultResolver when nil).
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// CACertPEM is the CA that signs the control plane's server certificate.
	CACertPEM []byte
	// Token returns the dataplane token; called for every connection attempt.
	Token func() (string, error)
	// Mesh and Name identify the dataplane.
	Mesh, Name string
	// OutDir receives cert.pem, key.pem and ca.pem.
	OutDir string
	// OnRotate, if set, runs via `sh -c` after every change written, with
	// MESHCA_DP_OUT=OutDir in its environment.
	OnRotate string
	// HookOutput receives the hook's stdout and stderr (default os.Stderr).
	HookOutput io.Writer
	// HookTimeout bounds one hook run (default DefaultHookTimeout).
	HookTimeout time.Duration
	// InitialBackoff and MaxBackoff bound reconnection delays.
	InitialBackoff, MaxBackoff time.Duration
	// MaxNotServedBackoff bounds the delay between attempts while the
	// control plane answers that it has nothing to serve this dataplane
	// (codes.NotFound, codes.FailedPrecondition): an operator must act
	// first, so there is no hurry (default DefaultMaxNotServedBackoff; never
	// below MaxBackoff).
	MaxNotServedBackoff time.Duration
	// Logger receives progress (never key material or the token).
	Logger *slog.Logger
	// OnUpdate, if set, is called after each change written (and its hook run).
	OnUpdate func(Update)
	// UntrustedHint is logged, once, the first time the control plane's
	// certificate does not verify against CACertPEM: how to fix it.
	UntrustedHint string
	// PermanentErrorLimit, when positive, makes Run give up (an error
	// wrapping ErrUntrusted) after that many attempts in a row failed
	// because the control plane's certificate does not verify; 0 retries
	// for ever (the control plane may be given the expected certificate).
	PermanentErrorLimit int
}

// Update describes certificate material written to disk.
type Update struct {
	Version  string
	Serial   *big.Int
	NotAfter time.Time
}

// TokenFromFile returns a Config.Token reading path (surrounding whitespace trimmed).
func TokenFromFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read dataplane token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("read dataplane token: %s is empty", path)
		}
		return tok, nil
	}
}

// Run keeps OutDir up to date until ctx is done (then it returns nil) or the
// token is refused (an error wrapping ErrRefused).
func Run(ctx context.Context, cfg Config) error {
	addrs, err := cfg.addresses()
	if err != nil {
		return err
	}
	if len(addrs) == 0 || cfg.Mesh == "" || cfg.Name == "" || cfg.OutDir == "" || cfg.Token == nil {
		return errors.New("dpagent: control-plane address, mesh, name, output directory and token are required")
	}
	if cfg.LookupHost == nil {
		cfg.LookupHost = net.DefaultResolver.LookupHost
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CACertPEM) {
		return errors.New("dpagent: the control-plane CA certificate holds no PEM certificate")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HookOutput == nil {
		cfg.HookOutput = os.Stderr
	}
	if cfg.HookTimeout <= 0 {
		cfg.HookTimeout = DefaultHookTimeout
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxNotServedBackoff <= 0 {
		cfg.MaxNotServedBackoff = DefaultMaxNotServedBackoff
	}
	// The directory is made up front so that an unusable --out fails at
	// once, and removed again if Run ends before anything was written in it.
	_, statErr := os.Stat(cfg.OutDir)
	if err := os.MkdirAll(cfg.OutDir, 0o750); err != nil {
		return fmt.Errorf("dpagent: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		defer func() { _ = os.Remove(cfg.OutDir) }() // fails, as it should, once files are in it
	}
	conns := &clients{cfg: cfg, pool: pool, conns: map[endpoint]*grpc.ClientConn{}}
	defer conns.close()

	a := &agent{cfg: cfg, log: cfg.Logger.With("node", sds.NodeID(cfg.Mesh, cfg.Name))}
	next := 0 // index of the endpoint to stream from
	delay := cfg.InitialBackoff
	untrusted := 0
	lastNotServed := "" // the control plane's last reason for serving nothing, logged once
	for {
		eps := endpoints(ctx, addrs, cfg.LookupHost)
		ep := eps[next%len(eps)]
		if a.client, err = conns.get(ep); err != nil {
			return err
		}
		a.address = ep.dial
		received, err := a.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c := status.Code(err)
		if c == codes.Unauthenticated || c == codes.PermissionDenied {
			// A token replaced since it was sent (kubelet rotates a pod's
			// ServiceAccount token; an operator replaced the file) deserves
			// an attempt: the refusal may be of the old one's expiry.
			if tok, terr := cfg.Token(); terr == nil && tok != a.token {
				a.log.Info("the control plane refused the token, which has been replaced since; reconnecting with the new one", "code", c.String())
				continue
			}
			return fmt.Errorf("%w (%s): %s", ErrRefused, c, status.Convert(err).Message())
		}
		if received {
			delay = cfg.InitialBackoff
			lastNotServed = ""
		}
		if c == codes.NotFound || c == codes.FailedPrecondition {
			// The token is good but there is nothing to serve yet: the
			// operator may register the dataplane or enable mTLS, so wait
			// for it, saying why once per reason rather than per attempt.
			reason := c.String() + ": " + status.Convert(err).Message()
			wait := delay/2 + rand.N(delay/2+1)
			if reason != lastNotServed {
				lastNotServed = reason
				a.log.Warn("the control plane has nothing to serve this dataplane; retrying until it has", "code", c.String(), "reason", status.Convert(err).Message())
			} else {
				a.log.Debug("still nothing to serve; retrying", "code", c.String(), "in", wait.Round(time.Millisecond))
			}
			if !sleep(ctx, wait) {
				return nil
			}
			delay = min(2*delay, max(cfg.MaxBackoff, cfg.MaxNotServedBackoff))
			continue
		}
		if isUntrusted(err) {
			untrusted++
			if untrusted == 1 {
				a.log.Error("the control plane's certificate does not verify against the CA given; "+cfg.UntrustedHint, "address", ep.dial, "error", err)
			}
			if cfg.PermanentErrorLimit > 0 && untrusted >= cfg.PermanentErrorLimit {
				return fmt.Errorf("%w (%d attempts): %s", ErrUntrusted, untrusted, status.Convert(err).Message())
			}
		} else {
			untrusted = 0
		}
		if len(eps) > 1 {
			// Another instance serves the same certificates: move on.
			next = (next + 1) % len(eps)
			a.log.Info("moving to the next control-plane instance", "from", ep.dial, "to", eps[next].dial)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if untrusted > 1 {
			a.log.Debug("SDS stream ended; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		} else {
			a.log.Warn("SDS stream ended; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		}
		if !sleep(ctx, wait) {
			return nil
		}
		delay = min(2*delay, cfg.MaxBackoff)
	}
}

// sleep waits for d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// isUntrusted tells whether err is the TLS handshake failing on the control
// plane's certificate. gRPC reports handshake failures as Unavailable with
// the cause only in the message, so the message is what can be matched.
func isUntrusted(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	msg := status.Convert(err).Message()
	return strings.Contains(msg, "x509: ") || strings.Contains(msg, "failed to verify certificate")
}

type agent struct {
	cfg     Config
	client  secretv3.SecretDiscoveryServiceClient
	address string // of the instance streamed from
	token   string // sent on the last stream
	log     *slog.Logger

	// Last secrets received (SotW responses may carry a subset).
	chain, key, ca []byte
}

// stream runs one SDS stream; received reports whether any response arrived.
func (a *agent) stream(ctx context.Context) (received bool, err error) {
	tok, err := a.cfg.Token()
	if err != nil {
		return false, err
	}
	a.token = tok
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok))
	defer cancel()
	st, err := a.client.StreamSecrets(sctx)
	if err != nil {
		return false, err
	}
	node := &corev3.Node{Id: sds.NodeID(a.cfg.Mesh, a.cfg.Name)}
	names := []string{sds.IdentityCertName(a.cfg.Mesh), sds.MeshCAName(a.cfg.Mesh)}
	// A new stream starts without a version so the server sends the full
	// state; files that did not change are not rewritten.
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL}); err != nil {
		return false, recvErr(st, err)
	}
	accepted := ""
	nacks := 0
	for {
		resp, err := st.Recv()
		if err != nil {
			return received, err
		}
		if !received {
			a.log.Info("connected to the control plane", "address", a.address)
		}
		received = true
		next := &discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: sds.SecretTypeURL, ResponseNonce: resp.GetNonce()}
		applyErr := a.apply(ctx, resp)
		var bad *invalidError
		switch {
		case errors.As(applyErr, &bad):
			a.log.Error("rejecting secrets from the control plane", "version", resp.GetVersionInfo(), "error", applyErr)
			next.VersionInfo = accepted
			next.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: applyErr.Error()}
			// A control plane may answer a NACK at once with the same
			// content: wait before NACKing again so that is no hot loop.
			nacks++
			select {
			case <-time.After(min(time.Duration(nacks)*time.Second, 30*time.Second)):
			case <-ctx.Done():
				return received, nil
			}
		case applyErr != nil:
			return received, applyErr // local failure (disk): reconnect and retry with full state
		default:
			nacks = 0
			accepted = resp.GetVersionInfo()
			next.VersionInfo = accepted
		}
		if err := st.Send(next); err != nil {
			return received, recvErr(st, err)
		}
	}
}

// recvErr returns the stream's status after a failed Send (gRPC reports the
// real error on Recv; Send only says io.EOF).
func recvErr(st grpc.ClientStream, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return sendErr
	}
	if err := st.RecvMsg(&discoveryv3.DiscoveryResponse{}); err != nil {
		return err
	}
	return sendErr
}

// invalidError marks unusable content (NACKed, not retried).
type invalidError struct{ err error }

func (e *invalidError) Error() string { return e.err.Error() }
func (e *invalidError) Unwrap() error { return e.err }

func invalid(format string, args ...any) error {
	return &invalidError{fmt.Errorf(format, args...)}
}

func (a *agent) apply(ctx context.Context, resp *discoveryv3.DiscoveryResponse) error {
	if resp.GetTypeUrl() != sds.SecretTypeURL {
		return invalid("unexpected type %q", resp.GetTypeUrl())
	}
	chain, key, ca := a.chain, a.key, a.ca
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			return invalid("decode secret: %w", err)
		}
		switch s.GetName() {
		case sds.IdentityCertName(a.cfg.Mesh):
			tc := s.GetTlsCertificate()
			chain, key = tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
		case sds.MeshCAName(a.cfg.Mesh):
			ca = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
		}
	}
	if chain == nil || ca == nil {
		a.chain, a.key, a.ca = chain, key, ca
		return nil // wait for the rest
	}
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return invalid("identity certificate and key: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return invalid("trust bundle holds no PEM certificate")
	}
	a.chain, a.key, a.ca = chain, key, ca

	changed, err := a.write(ca, key, chain)
	if err != nil || !changed {
		return err
	}
	leaf := pair.Leaf
	var ids []string
	for _, u := range leaf.URIs {
		ids = append(ids, u.String())
	}
	a.log.Info("certificate updated", "version", resp.GetVersionInfo(), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "uris", ids, "dir", a.cfg.OutDir)
	a.runHook(ctx)
	if a.cfg.OnUpdate != nil {
		a.cfg.OnUpdate(Update{Version: resp.GetVersionInfo(), Serial: leaf.SerialNumber, NotAfter: leaf.NotAfter})
	}
	return nil
}

// write stores the files whose content changed: ca.pem, key.pem, then cert.pem.
func (a *agent) write(ca, key, chain []byte) (bool, error) {
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAFile, ca, 0o644},
		{KeyFile, key, 0o600},
		{CertFile, chain, 0o644},
	}
	var set []atomicfile.File
	for _, f := range files {
		path := filepath.Join(a.cfg.OutDir, f.name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.data) {
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == f.perm {
				continue
			}
		}
		set = append(set, atomicfile.File{Name: f.name, Data: f.data, Perm: f.perm})
	}
	if len(set) == 0 {
		return false, nil
	}
	// All new contents are on disk before the first rename, so a reader
	// can see a mix of old and new files only within a few renames.
	return true, atomicfile.WriteSet(a.cfg.OutDir, set...)
}

func (a *agent) runHook(ctx context.Context) {
	if a.cfg.OnRotate == "" {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, a.cfg.HookTimeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, "sh", "-c", a.cfg.OnRotate)
	cmd.Env = append(os.Environ(), EnvOut+"="+a.cfg.OutDir)
	cmd.Stdout, cmd.Stderr = a.cfg.HookOutput, a.cfg.HookOutput
	start := time.Now()
	if err := cmd.Run(); err != nil {
		a.log.Error("--on-rotate hook failed", "error", err)
		return
	}
	a.log.Info("--on-rotate hook ran", "took", time.Since(start).Round(time.Millisecond))
}
