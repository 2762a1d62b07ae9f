package sds

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// offStack runs f on a new goroutine and waits for its result.
//
// A connection's goroutine lives as long as the connection, and keeps the
// largest stack it ever needed: the runtime halves an idle goroutine's stack
// only while less than a quarter of it is in use. So work that goes deep
// (the TLS handshake) runs on a short-lived goroutine instead.
func offStack[T any](f func() T) T {
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return <-ch
}

// logRefusal logs why a stream is ended for what the client sent.
func (c *conn) logRefusal(err error) {
	if code := status.Code(err); code == codes.InvalidArgument || code == codes.PermissionDenied {
		c.s.log.Info("SDS stream refused", "node", c.node, "reason", err)
	}
}

// sent accounts a response sent.
func (s *Server) sent(signalAt time.Time) {
	s.pushes.Inc()
	if !signalAt.IsZero() {
		s.latency.Observe(s.now().Sub(signalAt).Seconds())
	}
}

func (s *Server) nextNonce() string {
	return strconv.FormatUint(s.nonce.Add(1), 36)
}

func checkTypeURL(t string) error {
	if t != "" && t != SecretTypeURL {
		return status.Errorf(codes.InvalidArgument, "type_url %q: this server serves %s only", t, SecretTypeURL)
	}
	return nil
}

// The two resources of a data plane, by index.
const (
	resIdentity = iota
	resCA
	numResources
)

// resourcePrefixes are the resource names less the mesh, by index.
var resourcePrefixes = [numResources]string{resIdentity: identityCertPrefix, resCA: meshCAPrefix}

func (c *conn) resourceName(i int) string { return resourcePrefixes[i] + c.mesh }

// resourceIndex returns the index of a resource name of this stream's
// mesh, -1 if none. It allocates nothing (it runs for every name of every
// request).
func (c *conn) resourceIndex(name string) int {
	for i, p := range resourcePrefixes {
		if rest, ok := strings.CutPrefix(name, p); ok && rest == c.mesh {
			return i
		}
	}
	return -1
}

// digest is a content hash, the version of a resource or response.
type digest [12]byte

func (d digest) String() string { return hex.EncodeToString(d[:]) }

// is reports whether version is d's string form, without allocating.
func (d digest) is(version string) bool {
	var b [2 * len(d)]byte
	hex.Encode(b[:], d[:])
	return string(b[:]) == version
}

func parseDigest(version string) (digest, bool) {
	var d digest
	if len(version) != 2*len(d) {
		return d, false
	}
	if _, err := hex.Decode(d[:], []byte(version)); err != nil {
		return digest{}, false
	}
	return d, true
}

func hashParts(parts ...[]byte) digest {
	h := sha256.New()
	var n [20]byte
	for _, p := range parts {
		h.Write(strconv.AppendInt(n[:0], int64(len(p)), 10))
		h.Write([]byte{':'})
		h.Write(p)
	}
	var sum [sha256.Size]byte
	var d digest
	copy(d[:], h.Sum(sum[:0]))
	return d
}

// resourceDigest is the version of resource i of sec.
func resourceDigest(i int, sec *Secrets) digest {
	if i == resIdentity {
		return hashParts([]byte("identity"), sec.CertChainPEM, sec.KeyPEM)
	}
	return hashParts([]byte("ca"), sec.TrustBundlePEM)
}

// resource builds resource i of sec.
func (c *conn) resource(i int, sec *Secrets) (*anypb.Any, error) {
	var m proto.Message
	if i == resIdentity {
		m = &tlsv3.Secret{
			Name: c.resourceName(resIdentity),
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.CertChainPEM}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.KeyPEM}},
			}},
		}
	} else {
		m = &tlsv3.Secret{
			Name: c.resourceName(resCA),
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: sec.TrustBundlePEM}},
			}},
		}
	}
	a, err := anypb.New(m)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode secret %s: %v", c.resourceName(i), err)
	}
	return a, nil
}

// sotwStream is the state of a state-of-the-world stream.
type sotwStream struct {
	c  *conn
	st *h2Stream

	started bool               // the initial request was received
	want    [numResources]bool // subscribed resources
	known   string             // version_info of the client before anything was sent on this stream
	nonce   string             // of the last response
	sent    digest             // version of the last response
	sentOK  bool               // something was sent
	nacked  digest             // last version the client rejected
	nackOK  bool               // nacked is set
}

func (st *sotwStream) request(msg []byte) error {
	req := new(discoveryv3.DiscoveryRequest)
	if err := proto.Unmarshal(msg, req); err != nil {
		return status.Errorf(codes.Internal, "decode DiscoveryRequest: %v", err)
	}
	c := st.c
	if err := c.checkNode(req.GetNode().GetId(), req.GetNode() != nil); err != nil {
		return err
	}
	if err := checkTypeURL(req.GetTypeUrl()); err != nil {
		return err
	}
	nonce := req.GetResponseNonce()
	if nonce != "" && st.nonce != "" && nonce != st.nonce {
		return nil // answers an older response: the client will answer the newer one
	}
	if ed := req.GetErrorDetail(); ed != nil {
		c.s.log.Warn("data plane rejected secrets (NACK)", "node", c.node, "version", st.sent.String(),
			"nonce", nonce, "code", ed.GetCode(), "error", ed.GetMessage())
		if nonce != "" && nonce == st.nonce {
			st.nacked, st.nackOK = st.sent, true
		}
	}
	st.started = true
	st.want = [numResources]bool{}
	wildcard := len(req.GetResourceNames()) == 0
	for _, n := range req.GetResourceNames() {
		if n == "*" {
			wildcard = true
		} else if i := c.resourceIndex(n); i >= 0 {
			st.want[i] = true
		}
	}
	if wildcard {
		st.want = [numResources]bool{true, true}
	}
	if !st.sentOK {
		st.known = req.GetVersionInfo()
	}
	return st.push(time.Time{})
}

func (st *sotwStream) push(signalAt time.Time) error {
	c := st.c
	if !st.started || st.want == [numResources]bool{} {
		return nil
	}
	sec, ok := c.s.src.Current(c.mesh, c.name)
	if !ok {
		return nil // nothing issued yet (or any more): keep what the client has
	}
	var parts [1 + 2*numResources][]byte
	parts[0] = []byte("sotw")
	for i := range numResources {
		if st.want[i] {
			d := resourceDigest(i, &sec)
			parts[1+2*i] = []byte(c.resourceName(i))
			parts[2+2*i] = d[:]
		}
	}
	version := hashParts(parts[:]...)
	if (st.sentOK && version == st.sent) || (st.nackOK && version == st.nacked) || (!st.sentOK && version.is(st.known)) {
		return nil
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: version.String(), TypeUrl: SecretTypeURL}
	for i := range numResources {
		if st.want[i] {
			a, err := c.resource(i, &sec)
			if err != nil {
				return err
			}
			resp.Resources = append(resp.Resources, a)
		}
	}
	if err := c.verifyBeforeSend(); err != nil {
		return err
	}
	resp.Nonce = c.s.nextNonce()
	if err := st.st.send(resp); err != nil {
		return err
	}
	st.nonce, st.sent, st.sentOK = resp.Nonce, version, true
	c.s.sent(signalAt)
	return nil
}

// deltaResource is what a delta stream knows of one resource.
type deltaResource struct {
	sub    bool   // explicitly subscribed
	has    bool   // the client holds a version (as far as we know)
	hasV   digest // that version
	sent   bool   // sent on this stream: removed if it disappears
	nackOK bool   // nack is set
	nack   digest // last version the client rejected
	inLast bool   // in the last response
	lastV  digest // version in the last response
}

// deltaStream is the state of an incremental stream.
type deltaStream struct {
	c  *conn
	st *h2Stream

	started  bool
	wildcard bool
	res      [numResources]deltaResource
	remove   []string // names to remove in the next response (unknown initial resources)
	nonce    string   // of the last response
}

func (st *deltaStream) subscribed(i int) bool { return st.wildcard || st.res[i].sub }

func (st *deltaStream) request(msg []byte) error {
	req := new(discoveryv3.DeltaDiscoveryRequest)
	if err := proto.Unmarshal(msg, req); err != nil {
		return status.Errorf(codes.Internal, "decode DeltaDiscoveryRequest: %v", err)
	}
	c := st.c
	if err := c.checkNode(req.GetNode().GetId(), req.GetNode() != nil); err != nil {
		return err
	}
	if err := checkTypeURL(req.GetTypeUrl()); err != nil {
		return err
	}
	if !st.started {
		st.started = true
		st.wildcard = len(req.GetResourceNamesSubscribe()) == 0
		for name, v := range req.GetInitialResourceVersions() {
			if i := c.resourceIndex(name); i >= 0 {
				st.res[i].has = true
				st.res[i].hasV, _ = parseDigest(v)
			} else {
				st.remove = append(st.remove, name)
			}
		}
	}
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			st.wildcard = true
		} else if i := c.resourceIndex(n); i >= 0 {
			st.res[i].sub = true
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			st.wildcard = false
		} else if i := c.resourceIndex(n); i >= 0 {
			st.res[i].sub = false
		}
	}
	for i := range st.res {
		if !st.subscribed(i) {
			// The client forgets unsubscribed resources.
			st.res[i].has, st.res[i].sent = false, false
		}
	}
	if ed := req.GetErrorDetail(); ed != nil {
		nonce := req.GetResponseNonce()
		c.s.log.Warn("data plane rejected secrets (NACK)", "node", c.node, "nonce", nonce,
			"code", ed.GetCode(), "error", ed.GetMessage())
		if nonce != "" && nonce == st.nonce {
			for i := range st.res {
				if r := &st.res[i]; r.inLast {
					r.nack, r.nackOK = r.lastV, true
				}
			}
		}
	}
	return st.push(time.Time{})
}

func (st *deltaStream) push(signalAt time.Time) error {
	c := st.c
	if !st.started {
		return nil
	}
	sec, ok := c.s.src.Current(c.mesh, c.name)
	var send, drop [numResources]bool
	var versions [numResources]digest
	need := len(st.remove) > 0
	for i := range st.res {
		r := &st.res[i]
		if !st.subscribed(i) {
			continue
		}
		if !ok {
			// Gone from the source (the data plane was deleted): remove
			// what this stream gave the client. Never what it brought
			// from elsewhere: the source may just not be loaded yet.
			if r.sent && r.has {
				drop[i], need = true, true
			}
			continue
		}
		v := resourceDigest(i, &sec)
		if (r.has && r.hasV == v) || (r.nackOK && r.nack == v) {
			continue
		}
		send[i], versions[i], need = true, v, true
	}
	if !need {
		return nil
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: SecretTypeURL, RemovedResources: st.remove}
	for i := range st.res {
		if send[i] {
			a, err := c.resource(i, &sec)
			if err != nil {
				return err
			}
			resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: c.resourceName(i), Version: versions[i].String(), Resource: a})
		}
		if drop[i] {
			resp.RemovedResources = append(resp.RemovedResources, c.resourceName(i))
		}
	}
	if err := c.verifyBeforeSend(); err != nil {
		return err
	}
	resp.Nonce = c.s.nextNonce()
	if err := st.st.send(resp); err != nil {
		return err
	}
	st.nonce, st.remove = resp.Nonce, nil
	for i := range st.res {
		r := &st.res[i]
		r.inLast, r.lastV = send[i], versions[i]
		switch {
		case send[i]:
			r.has, r.hasV, r.sent = true, versions[i], true
		case drop[i]:
			r.has, r.sent = false, false
		}
	}
	c.s.sent(signalAt)
	return nil
}
