package apiserver

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// DefaultMaxBodyBytes bounds a request body unless Options.MaxBodyBytes says
// otherwise. The largest resource users send is a Secret holding a CA
// bundle: tens of KiB.
const DefaultMaxBodyBytes = 1 << 20

// DefaultBodyBudgetBytes bounds the bytes of request bodies being read and
// decoded at once, across all requests, unless Options.BodyBudgetBytes says
// otherwise. Decoding costs a few times a body's size in heap, so this keeps
// a burst of large PUTs to a bounded share of memory instead of
// hundreds of MiB, and keeps the API answering the others. Measured: 300
// concurrent 1-4 MB PUTs peak at about 130 MiB (BENCHMARKS.md §7).
const DefaultBodyBudgetBytes = 16 << 20

// bodyBudget is a non-blocking weighted semaphore over body bytes. A
// request that does not fit is refused at once (503 with Retry-After):
// waiting would hold its connection and the client's retry is cheaper.
type bodyBudget struct {
	mu        sync.Mutex
	used, max int64
}

func (b *bodyBudget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *bodyBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// errBodyBudget answers a request whose body does not fit the shared budget.
var errBodyBudget = errors.New("request bodies in flight exceed the budget")

// readBody reads a request body of at most MaxBodyBytes into one buffer
// (sized from Content-Length when the client sent one, so there is no
// growing and copying), charging it to the shared body budget. The caller
// calls release once it no longer holds the body or anything decoded from it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	max := s.opts.MaxBodyBytes
	if r.ContentLength > max {
		return nil, nil, &http.MaxBytesError{Limit: max}
	}
	charge := max
	if r.ContentLength >= 0 {
		charge = r.ContentLength
	}
	if !s.bodies.acquire(charge) {
		// Drain the body through a small buffer (no memory held) so that
		// the client reads the 503 instead of a connection reset while it
		// is still sending.
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, max))
		w.Header().Set("Retry-After", strconv.Itoa(1))
		return nil, nil, &Error{Status: http.StatusServiceUnavailable, Title: "Busy",
			Detail: "the control plane is decoding too many request bodies at once; retry in a second", Err: errBodyBudget}
	}
	release = func() { s.bodies.release(charge) }
	rd := http.MaxBytesReader(w, r.Body, max)
	if r.ContentLength >= 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(rd, body)
	} else {
		var buf bytes.Buffer
		_, err = buf.ReadFrom(rd)
		body = buf.Bytes()
	}
	if err != nil {
		release()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, err
		}
		return nil, nil, &Error{Status: http.StatusBadRequest, Title: TitleBadRequest, Detail: "could not read the request body", Err: err}
	}
	return body, release, nil
}
