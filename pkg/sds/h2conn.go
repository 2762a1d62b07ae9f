package sds

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The data-plane transport: gRPC over HTTP/2 over TLS, served here rather
// than by grpc-go's server.
//
// Every Envoy holds its own connection, so what a connection costs while
// idle sizes a zone control plane. grpc-go spends four goroutines on a
// connection with one stream (its reader, its writer, a keepalive timer
// loop, the handler) and per-connection buffers; 10,000 proxies cost about
// 590 MiB (BENCHMARKS.md §2). This server spends one goroutine per
// connection, parked in the read of the TLS connection; frames are written
// under a mutex by whoever has something to send (a stream's short-lived
// worker, or the reader for control frames); keepalive is one loop for all
// connections; a stream has no goroutine of its own while idle (see
// h2stream.go). The wire protocol is unchanged: HTTP/2 (RFC 9113) with the
// gRPC mapping (length-prefixed messages, status in trailers), which
// grpc-go clients and Envoy speak.
//
// Bounds against a slow or stalled peer: every write has a deadline
// (writeTimeout) after which the connection is closed; a push waiting for
// flow-control credit gives up after sendStallTimeout; a stream holds at
// most maxPendingRequests unprocessed requests and a request is at most
// maxRecvMessage bytes; a connection's streams hold at most
// maxPartialPerConn bytes of incomplete requests; frames are at most 16 KiB
// and header lists at most maxHeaderListSize; a connection has at most
// maxStreamsPerConn streams. A push is built from the Source when it is
// sent, so nothing queues up per stream.

const (
	handshakeTimeout   = 10 * time.Second
	writeTimeout       = 10 * time.Second
	keepaliveTime      = 30 * time.Second // ping a connection silent this long
	keepaliveTimeout   = 10 * time.Second // close it if the ping is not answered by then
	keepaliveCheck     = 5 * time.Second
	pingMinInterval    = 10 * time.Second // a client pinging more often gets strikes
	maxPingStrikes     = 2
	maxStreamsPerConn  = 1024
	maxHeaderListSize  = 64 << 10
	maxRecvMessage     = 4 << 20
	maxPartialPerConn  = maxRecvMessage + initialWindow // incomplete requests a connection may hold
	maxPendingRequests = 16
	initialWindow      = 65535 // HTTP/2's default, ours for receiving
	windowUpdateAt     = initialWindow / 2
	maxWindow          = 1<<31 - 1
	maxGRPCMessageLen  = 1024 // of a grpc-message trailer
	asyncWorkers       = 16
)

// usePoller is false in tests of the fallback: each connection waiting on
// its own goroutine (the only way off Linux).
var usePoller = true

// sendStallTimeout bounds how long a push waits for the peer's
// flow-control credit (a variable for tests).
var sendStallTimeout = time.Minute

// The SDS methods, by HTTP/2 :path.
const (
	pathStream = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
	pathDelta  = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
	pathFetch  = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"
)

var (
	errConnClosed = status.Error(codes.Unavailable, "connection closed")
	errStreamDone = errors.New("stream ended")
)

// h2Conn is one data-plane connection.
type h2Conn struct {
	d   *h2Server
	nc  net.Conn
	raw syscall.RawConn // nc's, to wait for it to be readable; nil if none
	tc  *tls.Conn
	// The reader goroutine's.
	rc *recordConn
	pr *plainReader
	fr *http2.Framer

	wmu  sync.Mutex // one frame sequence at a time on the wire
	werr error      // the first write error; guarded by wmu

	mu        sync.Mutex
	streams   map[uint32]*h2Stream // open streams; guarded by mu
	maxStream uint32               // highest stream id the peer opened; guarded by mu
	connWin   int64                // what may still be sent on the connection; guarded by mu
	initWin   int64                // the peer's SETTINGS_INITIAL_WINDOW_SIZE; guarded by mu
	maxFrame  int                  // the peer's SETTINGS_MAX_FRAME_SIZE; guarded by mu
	winCh     chan struct{}        // closed when a send window grows; nil if nobody waits; guarded by mu
	closed    bool                 // guarded by mu
	goingAway bool                 // no new streams; guarded by mu

	pending atomic.Int32 // trailers being written (see h2Stream.end)
	pollID  uint64       // the poller's id for it (0: none yet); guarded by d.poll.mu

	// The reader goroutine's.
	recvWin     int64 // what the peer may still send on the connection
	recvUnacked int64 // received and not yet returned by WINDOW_UPDATE
	partial     int64 // bytes of incomplete requests held by streams (an upper bound)
	lastPing    time.Time
	strikes     int

	lastRead  atomic.Int64 // unix nanoseconds of the last frame read
	pingSent  atomic.Int64 // unix nanoseconds of our unanswered keepalive ping; 0 if none
	sentData  atomic.Bool  // we sent headers or data since the peer's last ping
	closeOnce sync.Once
}

// start reads the client's preface and first SETTINGS and sends ours;
// false if the connection is not HTTP/2 or fails.
func (h *h2Conn) start() bool {
	_ = h.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(h.pr, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return false
	}
	h.fr = http2.NewFramer(io.Discard, h.pr)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = maxHeaderListSize
	h.fr.SetReuseFrames()
	h.fr.SetMaxReadFrameSize(16384) // what HTTP/2 allows without our SETTINGS_MAX_FRAME_SIZE
	var settings []byte
	for _, s := range []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: maxStreamsPerConn},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	} {
		settings = binary.BigEndian.AppendUint16(settings, uint16(s.ID))
		settings = binary.BigEndian.AppendUint32(settings, s.Val)
	}
	if h.writeFrame(http2.FrameSettings, 0, 0, settings) != nil {
		return false
	}
	f, err := h.fr.ReadFrame()
	if err != nil {
		return false
	}
	if _, ok := f.(*http2.SettingsFrame); !ok {
		h.protocolError("the first frame must be SETTINGS")
		return false
	}
	_ = h.nc.SetReadDeadline(time.Time{})
	return h.frame(f)
}

// readLoop reads and handles frames while some are waiting (ready: the
// socket is known to be readable), then hands the connection to the
// poller and returns; without a poller it waits for the socket itself. A
// failure closes the connection.
func (h *h2Conn) readLoop(ready bool) {
	for {
		if !ready && !h.pr.buffered() && !h.rc.midRecord() {
			if h.d.poll != nil {
				if h.d.poll.arm(h) != nil {
					h.close()
				}
				return // the poller starts readLoop again when there is more
			}
			if waitReadable(h.raw) != nil {
				h.close()
				return
			}
		}
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.readFailed(err)
			h.close()
			return
		}
		h.lastRead.Store(time.Now().UnixNano())
		if !h.frame(f) {
			h.close()
			return
		}
		ready = false
	}
}

// readFailed handles a ReadFrame error: a stream error resets that
// stream; anything else ends the connection (with GOAWAY if the peer broke
// the protocol).
func (h *h2Conn) readFailed(err error) {
	var se http2.StreamError
	if errors.As(err, &se) {
		h.mu.Lock()
		st := h.streams[se.StreamID]
		h.mu.Unlock()
		if st != nil {
			st.end(status.Errorf(codes.Internal, "HTTP/2 stream error: %v", err), false)
		}
		_ = h.writeRST(se.StreamID, se.Code)
		return
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		h.goAway(http2.ErrCode(ce), "")
	}
}

// frame handles one frame; false ends the connection.
func (h *h2Conn) frame(f http2.Frame) bool {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return h.headers(f)
	case *http2.DataFrame:
		return h.data(f)
	case *http2.WindowUpdateFrame:
		return h.windowUpdate(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true
		}
		if err := h.settings(f); err != nil {
			h.protocolError(err.Error())
			return false
		}
		return h.writeFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, nil) == nil
	case *http2.PingFrame:
		if f.IsAck() {
			h.pingSent.Store(0)
			return true
		}
		if h.sentData.Swap(false) {
			h.strikes = 0
		}
		now := time.Now()
		if !h.lastPing.IsZero() && now.Sub(h.lastPing) < pingMinInterval {
			if h.strikes++; h.strikes > maxPingStrikes {
				h.goAway(http2.ErrCodeEnhanceYourCalm, "too_many_pings")
				return false
			}
		}
		h.lastPing = now
		return h.writeFrame(http2.FramePing, http2.FlagPingAck, 0, f.Data[:]) == nil
	case *http2.RSTStreamFrame:
		h.mu.Lock()
		st := h.streams[f.StreamID]
		h.mu.Unlock()
		if st != nil {
			st.end(status.Error(codes.Canceled, "stream reset by the client"), false)
		}
	case *http2.GoAwayFrame:
		// The peer opens no more streams; it closes the connection.
	case *http2.PushPromiseFrame:
		h.protocolError("PUSH_PROMISE from a client")
		return false
	}
	return true // PRIORITY, unknown types: ignored
}

func (h *h2Conn) settings(f *http2.SettingsFrame) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - h.initWin
			h.initWin = int64(s.Val)
			for _, st := range h.streams {
				st.sendWin += delta
			}
			h.wake()
		case http2.SettingMaxFrameSize:
			h.maxFrame = int(s.Val)
		}
		return nil
	})
}

func (h *h2Conn) windowUpdate(f *http2.WindowUpdateFrame) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if h.connWin+inc > maxWindow {
			go h.goAway(http2.ErrCodeFlowControl, "connection window overflow")
			return false
		}
		h.connWin += inc
	} else if st := h.streams[f.StreamID]; st != nil {
		if st.sendWin+inc > maxWindow {
			go st.end(status.Error(codes.Internal, "HTTP/2 stream window overflow"), true)
			return true
		}
		st.sendWin += inc
	}
	h.wake()
	return true
}

// wake tells senders waiting for credit to look again. h.mu held.
func (h *h2Conn) wake() {
	if h.winCh != nil {
		close(h.winCh)
		h.winCh = nil
	}
}

// headers opens a stream (or, on an open one, is the client's trailers,
// which end its side).
func (h *h2Conn) headers(f *http2.MetaHeadersFrame) bool {
	id := f.StreamID
	h.mu.Lock()
	if st := h.streams[id]; st != nil {
		h.mu.Unlock()
		if f.StreamEnded() {
			st.recvEnd()
		}
		return true
	}
	if id%2 == 0 || id <= h.maxStream {
		h.mu.Unlock()
		return h.writeRST(id, http2.ErrCodeStreamClosed) == nil
	}
	h.maxStream = id
	refuse := h.goingAway || len(h.streams) >= maxStreamsPerConn
	h.mu.Unlock()
	if refuse {
		return h.writeRST(id, http2.ErrCodeRefusedStream) == nil
	}
	if f.Truncated {
		return h.refuse(id, status.Errorf(codes.ResourceExhausted, "header list larger than %d bytes", maxHeaderListSize))
	}

	var method, path, contentType, authz, encoding, timeout string
	for _, hf := range f.Fields {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case "content-type":
			contentType = hf.Value
		case "authorization":
			if authz == "" {
				authz = hf.Value
			}
		case "grpc-encoding":
			encoding = hf.Value
		case "grpc-timeout":
			timeout = hf.Value
		}
	}
	switch {
	case method != "POST":
		return h.writeHTTPStatus(id, "405")
	case contentType != "application/grpc" && !strings.HasPrefix(contentType, "application/grpc+") && !strings.HasPrefix(contentType, "application/grpc;"):
		return h.writeHTTPStatus(id, "415")
	}
	var kind streamKind
	switch path {
	case pathStream:
		kind = sotwKind
	case pathDelta:
		kind = deltaKind
	case pathFetch:
		return h.refuse(id, status.Error(codes.Unimplemented, "FetchSecrets is not supported; use StreamSecrets or DeltaSecrets"))
	default:
		return h.refuse(id, status.Errorf(codes.Unimplemented, "unknown method %s", path))
	}
	if encoding != "" && encoding != "identity" {
		return h.refuse(id, status.Errorf(codes.Unimplemented, "grpc-encoding %q is not supported (identity only)", encoding))
	}
	st := newStream(h, id, kind, authz)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	st.sendWin = h.initWin
	h.streams[id] = st
	h.mu.Unlock()
	if d, ok := parseTimeout(timeout); ok {
		st.setDeadline(d)
	}
	st.start(f.StreamEnded())
	return true
}

// data takes a DATA frame's gRPC messages.
func (h *h2Conn) data(f *http2.DataFrame) bool {
	n := int64(f.Length) // padding counts for flow control
	h.recvWin -= n
	if h.recvWin < 0 {
		h.goAway(http2.ErrCodeFlowControl, "connection window exceeded")
		return false
	}
	h.recvUnacked += n
	if h.recvUnacked >= windowUpdateAt {
		if h.writeWindowUpdate(0, uint32(h.recvUnacked)) != nil {
			return false
		}
		h.recvWin += h.recvUnacked
		h.recvUnacked = 0
	}
	h.mu.Lock()
	st := h.streams[f.StreamID]
	h.mu.Unlock()
	if st == nil {
		return true // a stream already ended: its data is dropped
	}
	before := len(st.partial)
	ok := st.data(f.Data(), n, f.StreamEnded())
	h.partial += int64(len(st.partial) - before)
	if h.partial > maxPartialPerConn {
		// Streams ended elsewhere are still counted: count exactly.
		h.partial = h.partialNow()
		if h.partial > maxPartialPerConn {
			h.goAway(http2.ErrCodeEnhanceYourCalm, "too much incomplete request data")
			return false
		}
	}
	return ok
}

// partialNow sums the incomplete request bytes the open streams hold.
// Reader goroutine (it owns each stream's partial).
func (h *h2Conn) partialNow() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for _, st := range h.streams {
		n += int64(len(st.partial))
	}
	return n
}

// refuse answers a new stream with a status alone (trailers only).
func (h *h2Conn) refuse(id uint32, err error) bool {
	return h.writeHeaders(id, statusFields(false, err), true) == nil
}

// writeHTTPStatus answers a request that is not gRPC with an HTTP status.
func (h *h2Conn) writeHTTPStatus(id uint32, code string) bool {
	return h.writeHeaders(id, []hpack.HeaderField{{Name: ":status", Value: code}}, true) == nil
}

// protocolError ends the connection for a protocol violation.
func (h *h2Conn) protocolError(msg string) {
	h.goAway(http2.ErrCodeProtocol, msg)
}

// goAway sends GOAWAY; an error code other than NO_ERROR also closes the
// connection.
func (h *h2Conn) goAway(code http2.ErrCode, debug string) {
	h.mu.Lock()
	h.goingAway = true
	last := h.maxStream
	h.mu.Unlock()
	p := binary.BigEndian.AppendUint32(nil, last)
	p = binary.BigEndian.AppendUint32(p, uint32(code))
	p = append(p, debug...)
	_ = h.writeFrame(http2.FrameGoAway, 0, 0, p)
	if code != http2.ErrCodeNo {
		h.close()
	}
}

// quiet reports whether no stream is open and no trailers are being written.
func (h *h2Conn) quiet() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return (len(h.streams) == 0 && h.pending.Load() == 0) || h.closed
}

// close closes the connection and ends its streams (without trailers:
// nothing more can be written). It may be called more than once.
func (h *h2Conn) close() {
	h.closeOnce.Do(func() {
		// Under wmu, so a write in progress (bounded by writeTimeout)
		// finishes first: trailers being written at shutdown get out.
		h.wmu.Lock()
		_ = h.nc.Close()
		if h.werr == nil {
			h.werr = net.ErrClosed
		}
		h.wmu.Unlock()
		h.mu.Lock()
		h.closed = true
		streams := make([]*h2Stream, 0, len(h.streams))
		for _, st := range h.streams {
			streams = append(streams, st)
		}
		h.wake()
		h.mu.Unlock()
		for _, st := range streams {
			st.end(errConnClosed, false)
		}
		if h.d.poll != nil {
			h.d.poll.forget(h)
		}
		h.d.mu.Lock()
		delete(h.d.conns, h)
		h.d.mu.Unlock()
		h.d.s.transport.Dec()
		h.d.wg.Done()
	})
}
