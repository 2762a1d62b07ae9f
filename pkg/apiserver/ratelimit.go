package apiserver

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of the per-client request rate on the HTTPS listener.
const (
	DefaultClientRate  = 50  // requests per second, sustained
	DefaultClientBurst = 200 // requests at once
)

// clientLimiter gives every client address of the HTTPS listener its own
// token bucket, before authentication, so that no client (a script in a
// loop, a token-guessing one) can take the API from the others. Buckets
// idle for a while are forgotten, so the map stays as small as the set of
// active clients.
type clientLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	clients map[string]*clientBucket
	swept   time.Time
}

type clientBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// idleAfter is how long an unused bucket is kept (a full one is as good as
// a new one by then).
const idleAfter = time.Minute

func newClientLimiter(perSecond float64, burst int, now func() time.Time) *clientLimiter {
	return &clientLimiter{limit: rate.Limit(perSecond), burst: burst, now: now, clients: map[string]*clientBucket{}}
}

// allow takes one token of client's bucket; when there is none it says how
// long until there is.
func (c *clientLimiter) allow(client string) (ok bool, retryAfter time.Duration) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.swept) > idleAfter {
		for k, b := range c.clients {
			if now.Sub(b.seen) > idleAfter {
				delete(c.clients, k)
			}
		}
		c.swept = now
	}
	b := c.clients[client]
	if b == nil {
		b = &clientBucket{lim: rate.NewLimiter(c.limit, c.burst)}
		c.clients[client] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimited answers 429 with Retry-After to a client over its rate.
func (s *Server) rateLimited(next http.Handler) http.Handler {
	if s.limiter == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			client = r.RemoteAddr
		}
		if ok, wait := s.limiter.allow(client); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			WriteError(w, s.logger, &Error{Status: http.StatusTooManyRequests, Title: "Too many requests",
				Detail: "this client is over its request rate on the HTTPS API; retry after the time in Retry-After"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
