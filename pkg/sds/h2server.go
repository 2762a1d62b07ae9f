package sds

// The transport's server: accepting connections, the workers that run
// their work, keepalive, shutdown.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// h2Server is one Serve call: its connections and keepalive.
type h2Server struct {
	s   *Server
	ctx context.Context // ends with Serve
	tls *tls.Config

	poll *poller // nil: each connection waits on its own goroutine

	mu    sync.Mutex
	conns map[*h2Conn]struct{} // guarded by mu
	wg    sync.WaitGroup       // open connections

	amu      sync.Mutex
	aq       []func() // guarded by amu
	aworkers int      // guarded by amu
}

// handle sets up one accepted connection (TLS, HTTP/2 preface and
// settings) and reads its first frames; the poller (or this goroutine,
// without one) takes it from there. d.wg was incremented for it; the
// connection's close decrements it.
func (d *h2Server) handle(nc net.Conn) {
	rc := &recordConn{Conn: nc}
	tc := tls.Server(rc, d.tls)
	// The handshake goes deep (signatures): off this goroutine, which may
	// live as long as the connection and keeps the largest stack it needed.
	err := offStack(func() error {
		ctx, cancel := context.WithTimeout(d.ctx, handshakeTimeout)
		defer cancel()
		return tc.HandshakeContext(ctx)
	})
	if err == nil {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "h2" {
			err = fmt.Errorf("ALPN protocol %q, not h2", p)
		}
	}
	if err != nil {
		d.s.log.Debug("SDS connection refused", "remote", nc.RemoteAddr().String(), "error", err)
		_ = nc.Close()
		d.wg.Done()
		return
	}
	h := &h2Conn{d: d, nc: nc, rc: rc, tc: tc, pr: &plainReader{tc: tc}, streams: make(map[uint32]*h2Stream, 1),
		connWin: initialWindow, initWin: initialWindow, maxFrame: 16384, recvWin: initialWindow}
	if sc, ok := nc.(syscall.Conn); ok {
		h.raw, _ = sc.SyscallConn()
	}
	h.lastRead.Store(time.Now().UnixNano())
	d.mu.Lock()
	d.conns[h] = struct{}{}
	d.mu.Unlock()
	d.s.transport.Inc()
	if d.ctx.Err() != nil || !h.start() {
		h.close()
		return
	}
	h.readLoop(false)
}

// later runs f on one of at most asyncWorkers goroutines: writes that
// must not block their caller (trailers, pings, GOAWAY at shutdown), without
// a goroutine each when thousands come at once.
func (d *h2Server) later(f func()) {
	d.amu.Lock()
	d.aq = append(d.aq, f)
	start := d.aworkers < asyncWorkers
	if start {
		d.aworkers++
	}
	d.amu.Unlock()
	if start {
		go d.asyncWorker()
	}
}

func (d *h2Server) asyncWorker() {
	for {
		d.amu.Lock()
		if len(d.aq) == 0 {
			d.aq = nil
			d.aworkers--
			d.amu.Unlock()
			return
		}
		f := d.aq[0]
		d.aq[0] = nil
		d.aq = d.aq[1:]
		d.amu.Unlock()
		f()
	}
}

// keepalive pings connections that have been silent for keepaliveTime and
// closes those that do not answer within keepaliveTimeout: one loop for
// all connections. It uses the wall clock: these are network timeouts.
func (d *h2Server) keepalive() {
	t := time.NewTicker(keepaliveCheck)
	defer t.Stop()
	var batch []*h2Conn
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		for h := range d.conns {
			batch = append(batch, h)
		}
		d.mu.Unlock()
		now := time.Now().UnixNano()
		for i, h := range batch {
			batch[i] = nil
			last, sent := h.lastRead.Load(), h.pingSent.Load()
			switch {
			case sent != 0 && last < sent:
				if now-sent > int64(keepaliveTimeout) {
					d.s.log.Info("closing SDS connection: keepalive ping not answered", "remote", h.nc.RemoteAddr().String())
					h.close()
				}
			case now-last > int64(keepaliveTime):
				h.pingSent.Store(now)
				d.later(func() { _ = h.writeFrame(http2.FramePing, 0, 0, []byte("meshcakp")) })
			}
		}
		batch = batch[:0]
	}
}

// shutdown tells every connection to go away, gives open streams (which
// the Server is ending with a status) up to shutdownGrace to be told, then
// closes every connection and waits for their goroutines.
func (d *h2Server) shutdown() {
	d.mu.Lock()
	conns := make([]*h2Conn, 0, len(d.conns))
	for h := range d.conns {
		conns = append(conns, h)
	}
	d.mu.Unlock()
	for _, h := range conns {
		d.later(func() { h.goAway(http2.ErrCodeNo, "") })
	}
	deadline := time.Now().Add(shutdownGrace)
	for _, h := range conns {
		for !h.quiet() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		h.close()
	}
	d.wg.Wait()
	if d.poll != nil {
		d.poll.stop()
	}
}
