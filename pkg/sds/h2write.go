package sds

// The transport's writing: HTTP/2 frames, header blocks, gRPC status and
// timeout fields.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/status"
)

// Writing. Frames are built here (a 9-byte header and the payload) and
// written whole under wmu with a deadline; nothing is buffered per
// connection between writes.

func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, stream uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(stream>>24)&0x7f, byte(stream>>16), byte(stream>>8), byte(stream))
}

// writeLocked writes b to the connection; wmu held. A failure closes the
// connection.
func (h *h2Conn) writeLocked(b []byte) error {
	if h.werr != nil {
		return h.werr
	}
	_ = h.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := h.tc.Write(b); err != nil {
		h.werr = err
		go h.close()
		return err
	}
	return nil
}

func (h *h2Conn) writeFrame(t http2.FrameType, flags http2.Flags, stream uint32, payload []byte) error {
	b := appendFrameHeader(make([]byte, 0, 9+len(payload)), len(payload), t, flags, stream)
	b = append(b, payload...)
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.writeLocked(b)
}

func (h *h2Conn) writeRST(stream uint32, code http2.ErrCode) error {
	return h.writeFrame(http2.FrameRSTStream, 0, stream, binary.BigEndian.AppendUint32(nil, uint32(code)))
}

func (h *h2Conn) writeWindowUpdate(stream, inc uint32) error {
	return h.writeFrame(http2.FrameWindowUpdate, 0, stream, binary.BigEndian.AppendUint32(nil, inc))
}

// writeHeaders writes a header block (small: it fits one frame).
func (h *h2Conn) writeHeaders(stream uint32, fields []hpack.HeaderField, end bool) error {
	flags := http2.FlagHeadersEndHeaders
	if end {
		flags |= http2.FlagHeadersEndStream
	}
	return h.writeFrame(http2.FrameHeaders, flags, stream, encodeHeaders(fields))
}

// encodeHeaders HPACK-encodes fields without touching the peer's dynamic
// table (every field is "never indexed" unless it matches the static table
// exactly), so no encoder state is kept per connection.
func encodeHeaders(fields []hpack.HeaderField) []byte {
	e := headerEncoders.Get().(*headerEncoder)
	defer headerEncoders.Put(e)
	e.buf.Reset()
	for _, f := range fields {
		f.Sensitive = true
		_ = e.enc.WriteField(f)
	}
	return bytes.Clone(e.buf.Bytes())
}

// headerEncoder is an HPACK encoder that never indexes, so it has no
// state between header blocks and can be shared: ending 10,000 streams at
// once (shutdown) would otherwise make an encoder and its tables for each.
type headerEncoder struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

var headerEncoders = sync.Pool{New: func() any {
	e := &headerEncoder{}
	e.enc = hpack.NewEncoder(&e.buf)
	return e
}}

// responseHeaders is the header block that starts every gRPC response.
var responseHeaders = encodeHeaders([]hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}})

// statusFields are the trailers carrying err's status (OK if nil); with
// the response headers in front if none were sent.
func statusFields(headersSent bool, err error) []hpack.HeaderField {
	var fs []hpack.HeaderField
	if !headersSent {
		fs = append(fs, hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	st := status.Convert(err)
	fs = append(fs, hpack.HeaderField{Name: "grpc-status", Value: fmt.Sprint(int(st.Code()))})
	if msg := st.Message(); msg != "" {
		if len(msg) > maxGRPCMessageLen {
			msg = msg[:maxGRPCMessageLen]
		}
		fs = append(fs, hpack.HeaderField{Name: "grpc-message", Value: percentEncode(msg)})
	}
	return fs
}

// percentEncode encodes a grpc-message value as the gRPC spec asks.
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// parseTimeout parses a grpc-timeout value ("100m", "5S").
func parseTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}
