package sds

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"
)

// Reading only what is there.
//
// An idle connection has no goroutine: the poller (h2poll_linux.go) waits
// for its socket to become readable, and a goroutine reads what came, then
// hands the socket back. That is only right if no byte of the peer's is
// buffered above the socket when the goroutine stops, so:
//
//   - recordConn, under TLS, never reads past the end of the current TLS
//     record: once tls.Conn has consumed a record it holds nothing more;
//   - plainReader, above TLS, reads a record's plaintext whole (into a
//     pooled buffer) and keeps only what the frame reader has not consumed.
//
// (Waiting for readability on the connection's own goroutine, the fallback
// without a poller, saves no stack: the runtime shrinks a parked stack only
// while it uses under a quarter of it plus an 800-byte guard, so 4 KiB is
// the floor whether the goroutine waits in the TLS read or before it.)

// recordConn is the TCP connection under TLS; Read returns at most the
// rest of the current TLS record (header, then body).
type recordConn struct {
	net.Conn
	hdr  [5]byte
	nhdr int // header bytes read of the current record
	left int // body bytes of the current record not yet read
}

func (r *recordConn) Read(p []byte) (int, error) {
	if r.left == 0 {
		want := min(len(p), len(r.hdr)-r.nhdr)
		n, err := r.Conn.Read(p[:want])
		copy(r.hdr[r.nhdr:], p[:n])
		r.nhdr += n
		if r.nhdr == len(r.hdr) {
			r.nhdr, r.left = 0, int(r.hdr[3])<<8|int(r.hdr[4])
		}
		return n, err
	}
	n, err := r.Conn.Read(p[:min(len(p), r.left)])
	r.left -= n
	return n, err
}

// midRecord reports whether part of a TLS record has been read.
func (r *recordConn) midRecord() bool { return r.nhdr > 0 || r.left > 0 }

// plainBufs holds buffers for a whole TLS record's plaintext.
var plainBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10+256); return &b }}

// plainReader reads the plaintext of a TLS connection record by record,
// keeping between reads only what was not consumed.
type plainReader struct {
	tc   *tls.Conn
	rest []byte
}

func (p *plainReader) Read(b []byte) (int, error) {
	if len(p.rest) == 0 {
		buf := plainBufs.Get().(*[]byte)
		defer plainBufs.Put(buf)
		n, err := p.tc.Read(*buf)
		if n == 0 {
			return 0, err
		}
		if n <= len(b) {
			return copy(b, (*buf)[:n]), err
		}
		p.rest = append([]byte(nil), (*buf)[:n]...) // an error comes again on the next read
	}
	n := copy(b, p.rest)
	p.rest = p.rest[n:]
	if len(p.rest) == 0 {
		p.rest = nil
	}
	return n, nil
}

// buffered reports whether plaintext is waiting to be read.
func (p *plainReader) buffered() bool { return len(p.rest) > 0 }

// waitReadable returns once the socket has something to read (or is
// closed or failed), parked with a shallow stack. Without a raw
// connection it returns at once.
func waitReadable(raw syscall.RawConn) error {
	if raw == nil {
		return nil
	}
	return raw.Read(peekReady)
}
