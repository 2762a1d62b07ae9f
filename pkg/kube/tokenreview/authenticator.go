package tokenreview

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"meshca/pkg/sds"
)

// Defaults of Options.
const (
	DefaultCacheTTL  = time.Minute
	DefaultCacheSize = 10000
)

// Options configure an Authenticator.
type Options struct {
	// Audiences, when set, are sent in every TokenReview: the token must
	// be for one of them. Empty: the API server's own audiences.
	Audiences []string
	// CacheTTL is how long a positive review is trusted (DefaultCacheTTL).
	CacheTTL time.Duration
	// CacheSize bounds the cached reviews (DefaultCacheSize).
	CacheSize int
	// DataplaneTokens, when set, verifies dataplane tokens; nil refuses them.
	DataplaneTokens sds.GenerationAuthenticator
	Now             func() time.Time
}

// Identity is the ServiceAccount a token authenticates.
type Identity struct {
	Namespace, ServiceAccount string
	// Pod is the pod the token is bound to (a token kubelet projects into
	// a pod), "" for a token bound to none.
	Pod string
}

// podNameKey is the TokenReview's user.extra entry naming the pod a token
// is bound to.
const podNameKey = "authentication.kubernetes.io/pod-name"

// Authenticator is an sds.NodeAuthenticator of ServiceAccount tokens.
type Authenticator struct {
	reviews authenticationclient.TokenReviewInterface
	opts    Options
	cache   *cache
	m       *metrics
}

var (
	_ sds.NodeAuthenticator       = (*Authenticator)(nil)
	_ sds.GenerationAuthenticator = (*Authenticator)(nil)
	_ sds.ChangeNotifier          = (*Authenticator)(nil)
)

// New returns an Authenticator reviewing tokens through client's API server.
func New(client kubernetes.Interface, opts Options) *Authenticator {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Authenticator{reviews: client.AuthenticationV1().TokenReviews(), opts: opts, cache: newCache(opts.CacheSize), m: newMetrics()}
}

func rejected(format string, args ...any) error {
	return fmt.Errorf("%w: %s", sds.ErrRejected, fmt.Sprintf(format, args...))
}

// claims are the few a token is routed by, read without verifying: a
// dataplane token has Kuma's Mesh and Name; a ServiceAccount token's expiry
// bounds how long its review is cached (only once the API server vouched
// for the token).
type claims struct {
	Mesh string `json:"Mesh"`
	Name string `json:"Name"`
	jwt.RegisteredClaims
}

func peek(token string) claims {
	var c claims
	_, _, _ = jwt.NewParser().ParseUnverified(token, &c) // not a JWT: no claims, the review refuses it
	return c
}

// VerifyNode implements sds.NodeAuthenticator: token must authenticate a
// ServiceAccount of the namespace of node's Dataplane
// (`<mesh>.<name>.<namespace>`), or be a dataplane token for node.
func (a *Authenticator) VerifyNode(ctx context.Context, token, node string) (string, string, time.Time, error) {
	c := peek(token)
	if c.Mesh != "" && c.Name != "" {
		return a.VerifyUntil(ctx, token)
	}
	mesh, name, ok := sds.SplitNodeID(node)
	if !ok {
		return "", "", time.Time{}, rejected("node id %q is not <mesh>.<name>", node)
	}
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return "", "", time.Time{}, rejected("dataplane %q of mesh %q is not named <name>.<namespace>: a ServiceAccount token authenticates only Dataplanes of its own namespace", name, mesh)
	}
	pod, ns := name[:i], name[i+1:]
	id, until, err := a.review(ctx, token, c)
	if err != nil {
		return "", "", time.Time{}, err
	}
	if id.Namespace != ns {
		return "", "", time.Time{}, rejected("the ServiceAccount token is of namespace %q (system:serviceaccount:%s:%s), not of dataplane %q's namespace %q",
			id.Namespace, id.Namespace, id.ServiceAccount, name, ns)
	}
	// A pod's own token serves only the Dataplane named after that pod,
	// as Kuma names them: another pod of the namespace cannot take its
	// identity.
	if id.Pod != "" && id.Pod != pod {
		return "", "", time.Time{}, rejected("the ServiceAccount token is bound to pod %q, not to pod %q of dataplane %q (a pod's token serves the Dataplane named after it, <pod>.<namespace>)",
			id.Pod, pod, name)
	}
	return mesh, name, until, nil
}

// Review returns the ServiceAccount token authenticates and until when that
// verdict is cached. Errors wrapping sds.ErrRejected mean the token is not
// acceptable; others are transient (the API server unreachable) or the
// control plane's own (not allowed to create TokenReviews).
func (a *Authenticator) Review(ctx context.Context, token string) (Identity, time.Time, error) {
	return a.review(ctx, token, peek(token))
}

func (a *Authenticator) review(ctx context.Context, token string, c claims) (Identity, time.Time, error) {
	key := sha256.Sum256([]byte(token))
	now := a.opts.Now()
	if e, ok := a.cache.get(key, now); ok {
		a.m.cacheHits.Inc()
		return e.id, e.until, nil
	}
	id, until, err := a.ask(ctx, token, c, now)
	switch {
	case err == nil:
		a.m.reviews.WithLabelValues(resultAuthenticated).Inc()
		if now.Before(until) {
			a.cache.put(key, entry{id: id, until: until}, now)
		}
	case errors.Is(err, sds.ErrRejected):
		a.m.reviews.WithLabelValues(resultRefused).Inc()
	default:
		a.m.reviews.WithLabelValues(resultError).Inc()
	}
	return id, until, err
}

// ask sends one TokenReview.
func (a *Authenticator) ask(ctx context.Context, token string, c claims, now time.Time) (Identity, time.Time, error) {
	start := time.Now()
	tr, err := a.reviews.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: a.opts.Audiences}},
		metav1.CreateOptions{})
	a.m.latency.Observe(time.Since(start).Seconds())
	switch {
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return Identity{}, time.Time{}, fmt.Errorf("cannot review the ServiceAccount token: the control plane may not create tokenreviews.authentication.k8s.io (its ClusterRole needs it): %w", err)
	case err != nil:
		return Identity{}, time.Time{}, fmt.Errorf("cannot review the ServiceAccount token now (TokenReview): %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "not authenticated"
		}
		return Identity{}, time.Time{}, rejected("the Kubernetes API server does not accept the ServiceAccount token: %s", why)
	}
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return Identity{}, time.Time{}, rejected("the token authenticates %q, which is not a ServiceAccount (system:serviceaccount:<namespace>:<name>)", st.User.Username)
	}
	if len(a.opts.Audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(s string) bool { return slices.Contains(a.opts.Audiences, s) }) {
		return Identity{}, time.Time{}, rejected("the ServiceAccount token is not for any of the audiences %q", a.opts.Audiences)
	}
	id := Identity{Namespace: parts[2], ServiceAccount: parts[3]}
	if pods := st.User.Extra[podNameKey]; len(pods) == 1 {
		id.Pod = pods[0]
	}
	until := now.Add(a.opts.CacheTTL)
	if c.ExpiresAt != nil && c.ExpiresAt.Before(until) {
		until = c.ExpiresAt.Time
	}
	return id, until, nil
}

// errNeedsNode is Verify's answer for anything but a dataplane token: the
// SDS server calls VerifyNode instead.
var errNeedsNode = rejected("a ServiceAccount token is verified for a node id (VerifyNode)")

// Verify implements sds.Authenticator for dataplane tokens.
func (a *Authenticator) Verify(ctx context.Context, token string) (string, string, error) {
	mesh, name, _, err := a.VerifyUntil(ctx, token)
	return mesh, name, err
}

// VerifyUntil implements sds.GenerationAuthenticator for dataplane tokens.
func (a *Authenticator) VerifyUntil(ctx context.Context, token string) (string, string, time.Time, error) {
	c := peek(token)
	if c.Mesh == "" || c.Name == "" {
		return "", "", time.Time{}, errNeedsNode
	}
	if a.opts.DataplaneTokens == nil {
		return "", "", time.Time{}, rejected("dataplane tokens are not accepted by this control plane: on Kubernetes a data plane authenticates with its pod's ServiceAccount token")
	}
	return a.opts.DataplaneTokens.VerifyUntil(ctx, token)
}

// Generation implements sds.GenerationAuthenticator: that of the dataplane
// tokens; ServiceAccount verdicts lapse by time only.
func (a *Authenticator) Generation(mesh string) (uint64, bool) {
	if a.opts.DataplaneTokens == nil {
		return 0, true
	}
	return a.opts.DataplaneTokens.Generation(mesh)
}

// Changed implements sds.ChangeNotifier (dataplane tokens revoked); nil
// without dataplane tokens.
func (a *Authenticator) Changed() <-chan struct{} {
	if cn, ok := a.opts.DataplaneTokens.(sds.ChangeNotifier); ok {
		return cn.Changed()
	}
	return nil
}
