package sds

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Running out of file descriptors.
//
// Every connected proxy holds a socket, so a zone control plane near its
// RLIMIT_NOFILE fails accept with EMFILE (ENFILE: the whole system is out).
// That is not fatal: the connection waits in the kernel's backlog and is
// accepted once another closes. acceptListener keeps the server serving
// through it: it counts the failure, logs it (at most once per
// acceptLogInterval, with how many it suppressed), backs off and retries,
// so the server above it never sees the error.

const (
	acceptLogInterval = 10 * time.Second
	acceptBackoffMin  = 5 * time.Millisecond
	acceptBackoffMax  = time.Second
)

// acceptListener retries accept failures caused by resource exhaustion.
type acceptListener struct {
	net.Listener
	log    *slog.Logger
	now    func() time.Time
	errors *prometheus.CounterVec
	open   func() int // open streams, for the log line

	mu         sync.Mutex
	lastLog    time.Time // guarded by mu
	suppressed int       // failures not logged since lastLog; guarded by mu
}

// acceptErrorReason names an accept failure worth retrying, "" if none.
func acceptErrorReason(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return "EMFILE"
	case errors.Is(err, syscall.ENFILE):
		return "ENFILE"
	case errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return "ENOMEM"
	}
	var te interface{ Temporary() bool }
	if errors.As(err, &te) && te.Temporary() {
		return "other"
	}
	return ""
}

func (l *acceptListener) Accept() (net.Conn, error) {
	backoff := acceptBackoffMin
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		reason := acceptErrorReason(err)
		if reason == "" {
			return nil, err // closed listener and the like: the server's to handle
		}
		l.errors.WithLabelValues(reason).Inc()
		l.report(reason, err)
		time.Sleep(backoff)
		backoff = min(2*backoff, acceptBackoffMax)
	}
}

// report logs an accept failure unless one was logged within acceptLogInterval.
func (l *acceptListener) report(reason string, err error) {
	now := l.now()
	l.mu.Lock()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < acceptLogInterval {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.lastLog, l.suppressed = now, 0
	l.mu.Unlock()

	attrs := []any{"reason", reason, "error", err, "openStreams", l.open(),
		"suppressedSinceLastLog", suppressed, "metric", "meshca_sds_accept_errors_total"}
	if reason == "EMFILE" || reason == "ENFILE" {
		if soft, hard, ok := fileLimit(); ok {
			attrs = append(attrs, "fdLimit", soft, "fdLimitMax", hard)
		}
		l.log.Error("SDS cannot accept data-plane connections: out of file descriptors (each connected proxy holds one); "+
			"new connections wait in the listen backlog; raise the limit (ulimit -n, systemd LimitNOFILE)", attrs...)
		return
	}
	l.log.Error("SDS cannot accept data-plane connections; retrying", attrs...)
}
