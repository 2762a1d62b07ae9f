package sds

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// streamKind is the SDS method of a stream.
type streamKind uint8

const (
	sotwKind streamKind = iota
	deltaKind
)

// xdsProtocol is a stream's xDS state machine; its methods are called one
// at a time, by the stream's worker.
type xdsProtocol interface {
	// request handles a client request message (and sends what it calls for).
	request(msg []byte) error
	// push sends what changed in the source; signalAt is when the source
	// signalled the change.
	push(signalAt time.Time) error
}

// h2Stream is one gRPC stream of a connection.
//
// It has no goroutine while idle. Work (authenticating the stream, each
// request, each push for a source signal) runs on a worker goroutine that
// exists only while there is some: the reader queues requests, the Source
// signals, and whoever finds no worker running starts one.
type h2Stream struct {
	h      *h2Conn
	id     uint32
	kind   streamKind
	authz  string // the authorization header
	ctx    context.Context
	cancel context.CancelCauseFunc

	sendWin int64 // what may still be sent on the stream; guarded by h.mu
	done    bool  // ended; guarded by h.mu

	// The reader goroutine's.
	recvWin     int64
	recvUnacked int64
	partial     []byte // a request message not yet complete

	// Guarded by h.wmu.
	headersSent bool
	writeDone   bool // trailers written (or nothing more can be)

	qmu         sync.Mutex
	queue       [][]byte  // requests not yet handled; guarded by qmu
	signalAt    time.Time // the earliest source signal not yet served (zero: none); guarded by qmu
	recvEnded   bool      // the client ended its side; guarded by qmu
	running     bool      // a worker runs (or the stream ended); guarded by qmu
	ended       bool      // guarded by qmu
	c           *conn     // once authenticated; guarded by qmu
	p           xdsProtocol
	unsubscribe func()      // guarded by qmu
	deadline    *time.Timer // grpc-timeout; guarded by qmu
	firstReq    *time.Timer // ends a stream whose first request does not come (NodeAuthenticator); guarded by qmu
}

func newStream(h *h2Conn, id uint32, kind streamKind, authz string) *h2Stream {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &h2Stream{h: h, id: id, kind: kind, authz: authz, ctx: ctx, cancel: cancel, recvWin: initialWindow}
}

// start starts the worker, which authenticates the stream first.
func (st *h2Stream) start(recvEnded bool) {
	st.qmu.Lock()
	st.running, st.recvEnded = true, recvEnded
	st.qmu.Unlock()
	go st.work()
}

func (st *h2Stream) setDeadline(d time.Duration) {
	t := time.AfterFunc(d, func() { st.end(status.Error(codes.DeadlineExceeded, "deadline exceeded (grpc-timeout)"), true) })
	st.qmu.Lock()
	st.deadline = t
	st.qmu.Unlock()
}

// data takes the payload of a DATA frame (n bytes of flow control); false
// ends the connection. Reader goroutine.
func (st *h2Stream) data(b []byte, n int64, end bool) bool {
	st.recvWin -= n
	if st.recvWin < 0 {
		st.end(status.Error(codes.ResourceExhausted, "HTTP/2 stream window exceeded"), true)
		return st.h.writeRST(st.id, http2.ErrCodeFlowControl) == nil
	}
	st.recvUnacked += n
	if st.recvUnacked >= windowUpdateAt && !end {
		if st.h.writeWindowUpdate(st.id, uint32(st.recvUnacked)) != nil {
			return false
		}
		st.recvWin += st.recvUnacked
		st.recvUnacked = 0
	}
	// gRPC messages: a flag byte, a 4-byte length, the message.
	for len(b) > 0 {
		if len(st.partial) < 5 {
			k := min(5-len(st.partial), len(b))
			st.partial = append(st.partial, b[:k]...)
			b = b[k:]
			if len(st.partial) < 5 {
				break
			}
			if st.partial[0] != 0 {
				st.end(status.Error(codes.Internal, "compressed message without grpc-encoding"), true)
				return true
			}
			if size := binary.BigEndian.Uint32(st.partial[1:5]); size > maxRecvMessage {
				st.end(status.Errorf(codes.ResourceExhausted, "request of %d bytes, more than the %d allowed", size, maxRecvMessage), true)
				return true
			}
		}
		size := int(binary.BigEndian.Uint32(st.partial[1:5]))
		k := min(size-(len(st.partial)-5), len(b))
		st.partial = append(st.partial, b[:k]...)
		b = b[k:]
		if len(st.partial)-5 == size {
			msg := st.partial[5:]
			st.partial = nil
			if !st.enqueue(msg) {
				return true
			}
		}
	}
	if end {
		if len(st.partial) > 0 {
			st.end(status.Error(codes.Internal, "stream ended inside a message"), true)
			return true
		}
		st.recvEnd()
	}
	return true
}

// enqueue queues a request for the worker; false if the stream ended.
func (st *h2Stream) enqueue(msg []byte) bool {
	st.qmu.Lock()
	if st.ended {
		st.qmu.Unlock()
		return false
	}
	if len(st.queue) >= maxPendingRequests {
		st.qmu.Unlock()
		st.end(status.Errorf(codes.ResourceExhausted, "more than %d requests waiting to be handled", maxPendingRequests), true)
		return false
	}
	st.queue = append(st.queue, msg)
	st.wakeLocked()
	return true
}

// recvEnd notes that the client ended its side: the stream ends (OK) once
// its queued requests are handled, as a gRPC handler's Recv returning EOF.
func (st *h2Stream) recvEnd() {
	st.qmu.Lock()
	st.recvEnded = true
	st.wakeLocked()
}

// signal is the Source's notify: it does not block.
func (st *h2Stream) signal() {
	now := st.h.d.s.now()
	st.qmu.Lock()
	if st.signalAt.IsZero() {
		st.signalAt = now
	}
	st.wakeLocked()
}

// wakeLocked starts a worker unless one runs, and unlocks qmu.
func (st *h2Stream) wakeLocked() {
	start := !st.running && !st.ended
	st.running = true
	st.qmu.Unlock()
	if start {
		go st.work()
	}
}

// work authenticates the stream if it is not yet, then handles requests
// and signals until there are none; it runs off any long-lived stack.
func (st *h2Stream) work() {
	if st.p == nil {
		node, ok := st.firstNode()
		if !ok || !st.open(node) {
			return
		}
	}
	for {
		st.qmu.Lock()
		var msg []byte
		var at time.Time
		switch {
		case st.ended:
			st.qmu.Unlock()
			return // running stays set: nothing restarts
		case len(st.queue) > 0:
			msg = st.queue[0]
			st.queue[0] = nil
			st.queue = st.queue[1:]
			if len(st.queue) == 0 {
				st.queue = nil
			}
		case !st.signalAt.IsZero():
			at, st.signalAt = st.signalAt, time.Time{}
		case st.recvEnded:
			st.qmu.Unlock()
			st.end(nil, true)
			return
		default:
			st.running = false
			st.qmu.Unlock()
			return
		}
		st.qmu.Unlock()
		var err error
		if msg != nil {
			err = st.p.request(msg)
		} else {
			err = st.p.push(at)
		}
		if err != nil {
			st.c.logRefusal(err)
			st.end(err, true)
			return
		}
	}
}

// firstRequestTimeout bounds how long a stream of a NodeAuthenticator's
// server may stay open, unauthenticated, before its first request.
var firstRequestTimeout = 30 * time.Second

// firstNode returns the node id of the stream's first request when the
// server's authenticator is a NodeAuthenticator (which needs it to tell
// which dataplane the credential must be good for), "" otherwise. false:
// no request yet (the worker stops; the request starts it again) or the
// stream ended.
func (st *h2Stream) firstNode() (string, bool) {
	if st.h.d.s.nauth == nil {
		return "", true
	}
	st.qmu.Lock()
	if st.ended {
		st.qmu.Unlock()
		return "", false
	}
	if len(st.queue) == 0 {
		if st.recvEnded {
			st.qmu.Unlock()
			st.end(nil, true)
			return "", false
		}
		// Not authenticated yet: such a stream may wait only so long.
		if st.firstReq == nil {
			st.firstReq = time.AfterFunc(firstRequestTimeout, func() {
				st.end(status.Errorf(codes.Unauthenticated, "no request within %s: a stream is authenticated by its first request's node id", firstRequestTimeout), true)
			})
		}
		st.running = false
		st.qmu.Unlock()
		return "", false
	}
	if st.firstReq != nil {
		st.firstReq.Stop()
	}
	msg := st.queue[0] // handled as usual once the stream is open
	st.qmu.Unlock()
	var node *corev3.Node
	if st.kind == sotwKind {
		req := new(discoveryv3.DiscoveryRequest)
		if err := proto.Unmarshal(msg, req); err != nil {
			st.end(status.Errorf(codes.Internal, "decode DiscoveryRequest: %v", err), true)
			return "", false
		}
		node = req.GetNode()
	} else {
		req := new(discoveryv3.DeltaDiscoveryRequest)
		if err := proto.Unmarshal(msg, req); err != nil {
			st.end(status.Errorf(codes.Internal, "decode DeltaDiscoveryRequest: %v", err), true)
			return "", false
		}
		node = req.GetNode()
	}
	if node.GetId() == "" {
		st.end(status.Error(codes.InvalidArgument, "the first request must carry the node (id <mesh>.<name>)"), true)
		return "", false
	}
	return node.GetId(), true
}

// open authenticates the stream and subscribes it to its data plane's
// secrets; false if the stream ended.
func (st *h2Stream) open(node string) bool {
	s := st.h.d.s
	c, err := s.open(st, node)
	if err != nil {
		st.end(err, true)
		return false
	}
	if st.kind == sotwKind {
		st.p = &sotwStream{c: c, st: st}
	} else {
		st.p = &deltaStream{c: c, st: st}
	}
	unsubscribe := s.src.Subscribe(c.mesh, c.name, st.signal)
	st.qmu.Lock()
	if st.ended {
		st.qmu.Unlock()
		unsubscribe()
		c.close()
		return false
	}
	st.c, st.unsubscribe = c, unsubscribe
	st.qmu.Unlock()
	if st.h.d.ctx.Err() != nil {
		c.end(errShuttingDown) // closeAll may have run before s.open added c
	}
	return true
}

// end ends the stream with err's status (nil: OK), written as trailers
// if trailers is set (not when the peer reset the stream or the connection
// is gone). It may be called from any goroutine, more than once: the first
// call decides.
func (st *h2Stream) end(err error, trailers bool) {
	h := st.h
	h.mu.Lock()
	if st.done {
		h.mu.Unlock()
		return
	}
	st.done = true
	delete(h.streams, st.id)
	h.mu.Unlock()
	cause := err
	if cause == nil {
		cause = errStreamDone
	}
	st.cancel(cause) // a push waiting for credit gives up

	st.qmu.Lock()
	st.ended, st.running = true, true
	st.queue = nil
	c, unsubscribe := st.c, st.unsubscribe
	if st.deadline != nil {
		st.deadline.Stop()
	}
	if st.firstReq != nil {
		st.firstReq.Stop()
	}
	st.qmu.Unlock()
	if unsubscribe != nil {
		unsubscribe()
	}
	if c != nil {
		c.close()
	}
	if trailers {
		// Not on the caller's goroutine: ending a stream must not block
		// (the reverify loop and shutdown end many).
		h.pending.Add(1)
		h.d.later(func() {
			defer h.pending.Add(-1)
			h.wmu.Lock()
			defer h.wmu.Unlock()
			if st.writeDone {
				return
			}
			st.writeDone = true
			b := encodeHeaders(statusFields(st.headersSent, err))
			_ = h.writeLocked(append(appendFrameHeader(nil, len(b), http2.FrameHeaders,
				http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, st.id), b...))
		})
	}
}

// send sends one response message, waiting for flow-control credit (at
// most sendStallTimeout).
func (st *h2Stream) send(m proto.Message) error {
	msg := make([]byte, 5, 5+proto.Size(m))
	msg, err := proto.MarshalOptions{}.MarshalAppend(msg, m)
	if err != nil {
		return status.Errorf(codes.Internal, "encode response: %v", err)
	}
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-5))
	h := st.h
	for len(msg) > 0 {
		n, err := st.reserve(len(msg))
		if err != nil {
			return err
		}
		var b []byte
		h.wmu.Lock()
		if st.writeDone {
			h.wmu.Unlock()
			return st.endErr()
		}
		if !st.headersSent {
			b = appendFrameHeader(b, len(responseHeaders), http2.FrameHeaders, http2.FlagHeadersEndHeaders, st.id)
			b = append(b, responseHeaders...)
			st.headersSent = true
		}
		b = appendFrameHeader(b, n, http2.FrameData, 0, st.id)
		b = append(b, msg[:n]...)
		h.sentData.Store(true) // before the peer can answer the data with a ping
		err = h.writeLocked(b)
		h.wmu.Unlock()
		if err != nil {
			return status.Errorf(codes.Unavailable, "send: %v", err)
		}
		msg = msg[n:]
	}
	return nil
}

// endErr is the error of a send on an ended stream.
func (st *h2Stream) endErr() error {
	if cause := context.Cause(st.ctx); cause != nil && cause != errStreamDone {
		return cause
	}
	return status.Error(codes.Canceled, "stream ended")
}

// reserve takes up to want bytes of send credit (connection, stream and
// frame size), waiting for the peer's WINDOW_UPDATE if there is none.
func (st *h2Stream) reserve(want int) (int, error) {
	h := st.h
	var timeout <-chan time.Time
	for {
		h.mu.Lock()
		if h.closed || st.done {
			h.mu.Unlock()
			return 0, st.endErr()
		}
		n := min(int64(want), h.connWin, st.sendWin, int64(h.maxFrame))
		if n > 0 {
			h.connWin -= n
			st.sendWin -= n
			h.mu.Unlock()
			return int(n), nil
		}
		if h.winCh == nil {
			h.winCh = make(chan struct{})
		}
		ch := h.winCh
		h.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(sendStallTimeout)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ch:
		case <-st.ctx.Done():
			return 0, st.endErr()
		case <-timeout:
			return 0, status.Errorf(codes.ResourceExhausted, "the client has not read a response for %v (HTTP/2 flow control)", sendStallTimeout)
		}
	}
}
