package acmpca

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	awspca "github.com/aws/aws-sdk-go-v2/service/acmpca"
	smithy "github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/time/rate"
)

// pcaClient is the part of the ACM PCA API the backend uses. It never asks
// for a CA private key: there is no such call in it.
type pcaClient interface {
	DescribeCertificateAuthority(context.Context, *awspca.DescribeCertificateAuthorityInput, ...func(*awspca.Options)) (*awspca.DescribeCertificateAuthorityOutput, error)
	GetCertificateAuthorityCertificate(context.Context, *awspca.GetCertificateAuthorityCertificateInput, ...func(*awspca.Options)) (*awspca.GetCertificateAuthorityCertificateOutput, error)
	IssueCertificate(context.Context, *awspca.IssueCertificateInput, ...func(*awspca.Options)) (*awspca.IssueCertificateOutput, error)
	GetCertificate(context.Context, *awspca.GetCertificateInput, ...func(*awspca.Options)) (*awspca.GetCertificateOutput, error)
}

var _ pcaClient = (*awspca.Client)(nil)

// hooks are the seams tests use; New fills them with the real thing.
type hooks struct {
	now func() time.Time
	// loadConfig is config.LoadDefaultConfig.
	loadConfig func(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error)
	// newClient is awspca.NewFromConfig.
	newClient func(cfg aws.Config, optFns ...func(*awspca.Options)) pcaClient
	// endpoint, when set, overrides the ACM PCA endpoint (as
	// AWS_ENDPOINT_URL_ACM_PCA does) without touching the environment.
	endpoint string
	// pollMinDelay and pollMaxDelay shape GetCertificate polling while ACM
	// answers RequestInProgressException.
	pollMinDelay, pollMaxDelay time.Duration
	// maxAttempts and maxBackoff configure the SDK's standard retryer.
	maxAttempts int
	maxBackoff  time.Duration
	// after waits between polls.
	after func(time.Duration) <-chan time.Time
}

func defaultHooks() hooks {
	return hooks{
		now:        time.Now,
		loadConfig: config.LoadDefaultConfig,
		newClient: func(cfg aws.Config, optFns ...func(*awspca.Options)) pcaClient {
			return awspca.NewFromConfig(cfg, optFns...)
		},
		pollMinDelay: 250 * time.Millisecond,
		pollMaxDelay: 2 * time.Second,
		maxAttempts:  10,
		maxBackoff:   5 * time.Second,
		after:        time.After,
	}
}

// newRetryer is the SDK's standard retryer with more attempts and no retry
// quota: the backend's own token bucket already paces every attempt, and the
// quota would otherwise turn a burst of throttles into errors surfacing to
// data planes.
//
// A throttled attempt is retried without the SDK's backoff: the adaptive
// bucket has just slowed down and paces the retry, and time waiting for the
// bucket does not count against the request timeout where a backoff sleep
// would.
func (h hooks) newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = h.maxAttempts
		o.MaxBackoff = h.maxBackoff
		o.RateLimiter = ratelimit.None
		o.Backoff = throttleAwareBackoff{retry.NewExponentialJitterBackoff(h.maxBackoff)}
	})
}

type throttleAwareBackoff struct{ next retry.BackoffDelayer }

func (b throttleAwareBackoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	if isThrottle(err) {
		return 0, nil
	}
	return b.next.BackoffDelay(attempt, err)
}

// requestTimer enforces a request timeout (dpCert.requestTimeout,
// rootChain.requestTimeout) that does not count time spent waiting for the
// backend's rate budget: the clock is paused while a request waits on the
// token bucket. It also remembers the last attempt's error, so a timeout
// can say what was going wrong.
type requestTimer struct {
	cancel context.CancelCauseFunc
	limit  time.Duration

	mu      sync.Mutex
	left    time.Duration
	since   time.Time // when the clock last resumed; zero while paused
	paused  int
	timer   *time.Timer
	lastErr error
}

type requestTimerKey struct{}

// errRequestTimeout is the cancellation cause of a request that ran out of
// working time.
var errRequestTimeout = errors.New("request timeout")

// withRequestTimer returns a context cancelled after limit of working time.
// stop must be called to release the timer.
func withRequestTimer(ctx context.Context, limit time.Duration) (context.Context, *requestTimer, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := &requestTimer{cancel: cancel, limit: limit, left: limit, since: time.Now()}
	t.timer = time.AfterFunc(limit, func() { cancel(errRequestTimeout) })
	ctx = context.WithValue(ctx, requestTimerKey{}, t)
	return ctx, t, func() {
		t.mu.Lock()
		t.timer.Stop()
		t.mu.Unlock()
		cancel(context.Canceled)
	}
}

func timerFrom(ctx context.Context) *requestTimer {
	t, _ := ctx.Value(requestTimerKey{}).(*requestTimer)
	return t
}

func (t *requestTimer) pause() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused == 0 {
		t.timer.Stop()
		t.left -= time.Since(t.since)
		t.since = time.Time{}
	}
	t.paused++
}

func (t *requestTimer) resume() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.paused--
	if t.paused > 0 {
		return
	}
	if t.left <= 0 {
		t.cancel(errRequestTimeout)
		return
	}
	t.since = time.Now()
	t.timer.Reset(t.left)
}

func (t *requestTimer) setLastErr(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastErr = err
}

func (t *requestTimer) last() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// timedOut reports whether ctx (made by withRequestTimer) ended because the
// working time ran out.
func timedOut(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errRequestTimeout)
}

// budgetMiddleware runs once per SDK attempt (after the retry middleware):
// it takes a token from the backend's bucket, with the request timer paused,
// and counts the attempt's outcome.
func budgetMiddleware(b budget, m *metrics) middleware.FinalizeMiddleware {
	return middleware.FinalizeMiddlewareFunc("meshcaACMPCABudget", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		op := awsmiddleware.GetOperationName(ctx)
		rt := timerFrom(ctx)
		if rt != nil {
			rt.pause()
		}
		start := time.Now()
		werr := b.limiter(op).Wait(ctx)
		m.budgetWait.Observe(time.Since(start).Seconds())
		if rt != nil {
			rt.resume()
		}
		if werr != nil {
			return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("waiting for the ACM PCA request budget: %w", werr)
		}
		out, md, err := next.HandleFinalize(ctx, in)
		outcome := outcomeOf(err)
		m.requests.WithLabelValues(op, outcome).Inc()
		b.use.request(op, isThrottle(err))
		if isThrottle(err) {
			m.throttles.WithLabelValues(op).Inc()
			b.throttled(op)
		} else if err == nil {
			b.succeeded(op)
		}
		if err != nil && rt != nil && ctx.Err() == nil {
			rt.setLastErr(err)
		}
		return out, md, err
	})
}

func addBudgetMiddleware(b budget, m *metrics) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Finalize.Insert(budgetMiddleware(b, m), "Retry", middleware.After)
	}
}

// budget holds the backend's token buckets. maxRequestsPerSecond bounds
// IssueCertificate, the billed call with the lowest ACM PCA quota (25/s by
// default); every other call (GetCertificate polling, Describe...) has its
// own bucket at readRatio times that rate, mirroring ACM's default quotas
// (GetCertificate 75/s), so polling never eats the issuing budget.
//
// The configured rate is a ceiling. The account quota is shared with other
// clients, so a ThrottlingException halves the bucket's rate (not below
// minRate) and each success wins back a small step towards the ceiling:
// after a throttle the backend settles just under what ACM grants instead of
// spending its retries against the quota.
type budget struct {
	issue, other *adaptive
	use          *usage
}

const (
	readRatio = 3
	minRate   = 0.5
	// recoverSteps successes bring a halved rate back to the ceiling.
	recoverSteps = 50
	// cutCooldown is how long after a cut further throttles are taken as
	// echoes of the same burst.
	cutCooldown = 2 * time.Second
)

type adaptive struct {
	mu      sync.Mutex
	ceiling float64
	lim     *rate.Limiter
	// cut is when the rate was last halved: the throttles of one burst of
	// concurrent requests halve it once, not once each.
	cut time.Time
	now func() time.Time
}

func newAdaptive(rps float64) *adaptive {
	return &adaptive{ceiling: rps, lim: rate.NewLimiter(rate.Limit(rps), 1), now: time.Now}
}

func (a *adaptive) setCeiling(rps float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ceiling != rps {
		a.ceiling = rps
		a.lim.SetLimit(rate.Limit(rps))
	}
}

func (a *adaptive) throttled() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if now.Sub(a.cut) < cutCooldown {
		return
	}
	a.cut = now
	a.lim.SetLimit(rate.Limit(max(float64(a.lim.Limit())/2, minRate)))
}

func (a *adaptive) succeeded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := float64(a.lim.Limit()); cur < a.ceiling {
		a.lim.SetLimit(rate.Limit(min(cur+a.ceiling/recoverSteps, a.ceiling)))
	}
}

func newBudget(rps float64) budget {
	return budget{issue: newAdaptive(rps), other: newAdaptive(rps * readRatio), use: newUsage(time.Now)}
}

func (b budget) setRate(rps float64) {
	b.issue.setCeiling(rps)
	b.other.setCeiling(rps * readRatio)
}

func (b budget) bucket(op string) *adaptive {
	if op == opIssue {
		return b.issue
	}
	return b.other
}

func (b budget) throttled(op string) { b.bucket(op).throttled() }
func (b budget) succeeded(op string) { b.bucket(op).succeeded() }

func (b budget) limiter(op string) *rate.Limiter { return b.bucket(op).lim }

// credentialsError marks a failure to obtain AWS credentials (the default
// chain found none, a web identity exchange failed, ...).
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// markedProvider wraps a credentials provider so its failures are
// recognisable.
type markedProvider struct{ aws.CredentialsProvider }

func (p markedProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err: err}
	}
	return c, nil
}

// Error codes that mean the credentials are wrong or lack permission.
var authCodes = map[string]bool{
	"UnrecognizedClientException":         true,
	"InvalidSignatureException":           true,
	"SignatureDoesNotMatch":               true,
	"IncompleteSignature":                 true,
	"IncompleteSignatureException":        true,
	"MissingAuthenticationToken":          true,
	"MissingAuthenticationTokenException": true,
	"InvalidClientTokenId":                true,
	"ExpiredTokenException":               true,
	"ExpiredToken":                        true,
	"AccessDeniedException":               true,
	"AccessDenied":                        true,
	"NotAuthorized":                       true,
	"UnauthorizedOperation":               true,
}

// Error codes that concern the CA named by conf.arn.
var arnCodes = map[string]bool{
	"ResourceNotFoundException": true,
	"InvalidArnException":       true,
	"InvalidStateException":     true,
}

func isThrottle(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	return isThrottleCode(ae.ErrorCode())
}

func isThrottleCode(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

func outcomeOf(err error) string {
	var (
		ae  smithy.APIError
		ce  *credentialsError
		rse *smithyhttp.RequestSendError
	)
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ce):
		return "credentials_error"
	case errors.As(err, &ae):
		return ae.ErrorCode()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.As(err, &rse):
		return "network_error"
	}
	return "error"
}

// OpError is an ACM PCA failure with the conf field it concerns (empty
// when it concerns no particular field) and the AWS error code ("" for
// network and credential failures).
type OpError struct {
	Field     string
	Operation string
	Code      string
	Message   string
	Err       error
}

func (e *OpError) Error() string {
	msg := e.Message
	if e.Code != "" {
		msg = e.Code + ": " + msg
	}
	msg += " (" + e.Operation + ")"
	if e.Field != "" {
		return e.Field + ": " + msg
	}
	return "ACM PCA: " + msg
}

func (e *OpError) Unwrap() error { return e.Err }

// classify turns an SDK error of one operation into an *OpError. When the
// request ran out of time, the last attempt's error (if any) explains why.
func classify(ctx context.Context, op string, err error, limit time.Duration) error {
	if err == nil {
		return nil
	}
	var last error
	if rt := timerFrom(ctx); rt != nil {
		last = rt.last()
	}
	if timedOut(ctx) {
		msg := fmt.Sprintf("no answer within %s (the request timeout; time waiting for the rate budget excluded)", limit)
		if last != nil {
			inner := classify(context.Background(), op, last, limit).(*OpError)
			inner.Message = msg + "; last error: " + describe(inner)
			inner.Code = "" // now part of the message
			inner.Err = errors.Join(err, last)
			return inner
		}
		return &OpError{Field: fArn, Operation: op, Message: msg + "; is the ACM PCA endpoint reachable?", Err: err}
	}
	var (
		ae  smithy.APIError
		ce  *credentialsError
		rse *smithyhttp.RequestSendError
	)
	switch {
	case errors.As(err, &ce):
		return &OpError{Field: fAuth, Operation: op, Message: "could not obtain AWS credentials: " + ce.Error(), Err: err}
	case errors.As(err, &ae):
		e := &OpError{Operation: op, Code: ae.ErrorCode(), Message: ae.ErrorMessage(), Err: err}
		switch {
		case authCodes[e.Code]:
			e.Field = fAuth
		case arnCodes[e.Code]:
			e.Field = fArn
		case isThrottleCode(e.Code):
			e.Field = fMaxRPS
			e.Message += "; ACM PCA kept throttling after retries: lower conf.maxRequestsPerSecond or raise the account quota"
		case e.Code == "IdempotencyException":
			e.Message += "; the idempotency token was used with other arguments (a request from before a restart): ACM PCA forgets tokens after 5 minutes, a later retry succeeds"
		}
		if e.Message == "" {
			e.Message = "(no message)"
		}
		return e
	case errors.As(err, &rse):
		host := ""
		var ue *url.Error
		if errors.As(rse, &ue) {
			if u, perr := url.Parse(ue.URL); perr == nil {
				host = u.Scheme + "://" + u.Host
			}
		}
		msg := "the ACM PCA endpoint could not be reached"
		if host != "" {
			msg = "the ACM PCA endpoint " + host + " could not be reached"
		}
		return &OpError{Field: fArn, Operation: op, Message: msg + ": " + netCause(rse).Error(), Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &OpError{Operation: op, Message: "request cancelled: " + err.Error(), Err: err}
	}
	return &OpError{Operation: op, Message: err.Error(), Err: err}
}

func describe(e *OpError) string {
	if e.Code != "" {
		return e.Code + ": " + e.Message
	}
	return e.Message
}

// netCause returns the network error under a RequestSendError (e.g. "dial
// tcp 10.0.0.1:443: connect: connection refused"), without the SDK's layers.
func netCause(rse *smithyhttp.RequestSendError) error {
	var oe *net.OpError
	if errors.As(rse, &oe) {
		return oe
	}
	var ue *url.Error
	if errors.As(rse, &ue) {
		return ue.Err
	}
	return rse.Err
}
