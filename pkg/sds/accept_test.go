package sds

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// failingListener fails Accept with errs in turn, then returns a connection.
type failingListener struct {
	net.Listener
	errs []error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	a, b := net.Pipe()
	_ = b.Close()
	return a, nil
}

func TestAcceptRetriesFileDescriptorExhaustion(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	var logs bytes.Buffer
	now := time.Unix(1000, 0)
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})
	l := &acceptListener{
		Listener: &failingListener{errs: []error{emfile, emfile, emfile}},
		log:      slog.New(slog.NewTextHandler(&logs, nil)),
		now:      func() time.Time { return now },
		errors:   counter,
		open:     func() int { return 7 },
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v, want a connection once descriptors are free", err)
	}
	_ = c.Close()
	if got := counterValue(t, counter.WithLabelValues("EMFILE")); got != 3 {
		t.Errorf("EMFILE failures counted: %v, want 3", got)
	}
	out := logs.String()
	if n := strings.Count(out, "out of file descriptors"); n != 1 {
		t.Errorf("logged %d times within the interval, want once:\n%s", n, out)
	}
	for _, want := range []string{"level=ERROR", "reason=EMFILE", "openStreams=7", "fdLimit="} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %q:\n%s", want, out)
		}
	}

	// After the interval the next failure is logged with the count suppressed.
	now = now.Add(acceptLogInterval)
	l.Listener = &failingListener{errs: []error{emfile}}
	if c, err := l.Accept(); err != nil {
		t.Fatal(err)
	} else {
		_ = c.Close()
	}
	if out := logs.String(); !strings.Contains(out, "suppressedSinceLastLog=2") {
		t.Errorf("second log line should report the 2 suppressed failures:\n%s", out)
	}
}

func TestAcceptReturnsPermanentErrors(t *testing.T) {
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})
	l := &acceptListener{
		Listener: &failingListener{errs: []error{fmt.Errorf("accept: %w", net.ErrClosed)}},
		log:      slog.New(slog.DiscardHandler), now: time.Now, errors: counter, open: func() int { return 0 },
	}
	if _, err := l.Accept(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Accept on a closed listener: %v, want the error returned", err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
