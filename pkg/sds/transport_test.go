package sds_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"strconv"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
)

// rawClient is an HTTP/2 client written frame by frame, to behave as
// grpc-go's client never would.
type rawClient struct {
	t  *testing.T
	c  *tls.Conn
	fr *http2.Framer
}

func dialRaw(t *testing.T, e *env) *rawClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.caPEM)
	c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	return &rawClient{t: t, c: c, fr: fr}
}

// open opens an SDS stream and sends req on it.
func (r *rawClient) open(id uint32, tok string, req proto.Message) {
	r.t.Helper()
	r.openHeaders(id, tok)
	b, err := proto.Marshal(req)
	if err != nil {
		r.t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b)))
	if err := r.fr.WriteData(id, false, append(msg, b...)); err != nil {
		r.t.Fatal(err)
	}
}

// openHeaders opens an SDS stream.
func (r *rawClient) openHeaders(id uint32, tok string) {
	r.t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "sds"},
		{":path", "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"authorization", "Bearer " + tok}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// awaitStatus reads frames until stream id's trailers and returns its grpc-status.
func (r *rawClient) awaitStatus(id uint32) string {
	r.t.Helper()
	var code string
	r.await("the stream's status", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if !ok || h.StreamID != id || !h.StreamEnded() {
			return false
		}
		for _, hf := range h.RegularFields() {
			if hf.Name == "grpc-status" {
				code = hf.Value
			}
		}
		return true
	})
	return code
}

// await reads frames until match returns true (10 s at most).
func (r *rawClient) await(what string, match func(http2.Frame) bool) {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return
		}
	}
}

// A proxy that stops reading (its flow-control window stays closed) holds
// one pending response, does not hold up other proxies, and has its stream
// ended with RESOURCE_EXHAUSTED once the push has waited too long.
func TestStalledProxy(t *testing.T) {
	sds.SetSendStallTimeout(t, 300*time.Millisecond)
	e := newEnv(t)
	for _, n := range []string{"web-1", "web-2"} {
		e.src.Set("default", n, sdstest.NewSecrets(t, "default", n, 1, time.Now()))
	}
	raw := dialRaw(t, e)
	if err := raw.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	raw.open(1, e.token("web-1"), sotwRequest("default.web-1", nil))

	// Another proxy is served meanwhile.
	openFirst(t, e, e.token("web-2"), "default.web-2")

	raw.await("the stalled stream's status", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.DataFrame:
			t.Fatalf("DATA sent into a closed flow-control window (%d bytes)", len(f.Data()))
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				if got := f.PseudoValue("status"); got != "" && got != "200" {
					t.Fatalf(":status %s", got)
				}
				var code string
				for _, hf := range f.RegularFields() {
					if hf.Name == "grpc-status" {
						code = hf.Value
					}
				}
				if code != strconv.Itoa(int(codes.ResourceExhausted)) {
					t.Fatalf("grpc-status %q, want %d (RESOURCE_EXHAUSTED)", code, codes.ResourceExhausted)
				}
				return true
			}
		}
		return false
	})
}

// A client that pings more often than allowed is told to calm down and
// disconnected, as grpc-go's server does.
func TestPingFlood(t *testing.T) {
	e := newEnv(t)
	raw := dialRaw(t, e)
	if err := raw.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := raw.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may already have closed the connection
		}
	}
	raw.await("GOAWAY", func(f http2.Frame) bool {
		ga, ok := f.(*http2.GoAwayFrame)
		if ok && ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
		}
		return ok
	})
}

func TestUnknownMethod(t *testing.T) {
	e := newEnv(t)
	err := e.cc.Invoke(authCtx(t, e.token("web-1")), "/envoy.service.secret.v3.SecretDiscoveryService/Nope",
		&discoveryv3.DiscoveryRequest{}, &discoveryv3.DiscoveryResponse{})
	wantCode(t, err, codes.Unimplemented)
	_, err = e.client.FetchSecrets(authCtx(t, e.token("web-1")), &discoveryv3.DiscoveryRequest{})
	wantCode(t, err, codes.Unimplemented)
	// The connection still serves.
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))
	openFirst(t, e, e.token("web-1"), "default.web-1")
}

// A request announcing more than the server takes is refused before the
// server holds it: the stream ends with RESOURCE_EXHAUSTED.
func TestOversizedRequest(t *testing.T) {
	e := newEnv(t)
	raw := dialRaw(t, e)
	if err := raw.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	raw.openHeaders(1, e.token("web-1"))
	prefix := binary.BigEndian.AppendUint32([]byte{0}, 64<<20)
	if err := raw.fr.WriteData(1, false, append(prefix, make([]byte, 1000)...)); err != nil {
		t.Fatal(err)
	}
	if got, want := raw.awaitStatus(1), strconv.Itoa(int(codes.ResourceExhausted)); got != want {
		t.Fatalf("grpc-status %q, want %s (RESOURCE_EXHAUSTED)", got, want)
	}
}

// Without the epoll poller (other systems), each connection waits on its
// own goroutine: streams are served, pushed to and shut down the same way.
func TestWithoutPoller(t *testing.T) {
	sds.WithoutPoller(t)
	e := newEnv(t)
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))
	s, r1 := openFirst(t, e, e.token("web-1"), "default.web-1")
	if err := s.Send(sotwRequest("", r1)); err != nil {
		t.Fatal(err)
	}
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, time.Now())
	e.src.Set("default", "web-1", s2)
	r2, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, r2.GetResources(), s2)
	if n := metricValue(t, e.reg, "meshca_sds_transport_connections"); n != 1 {
		t.Errorf("meshca_sds_transport_connections = %v, want 1", n)
	}
	e.cancel()
	wantClosed(t, s, codes.Unavailable, "a stream after shutdown")
}

// A client that starts large requests on many streams and never finishes
// them (within HTTP/2 flow control) cannot make the server hold more than
// a bounded amount: past about 4 MiB on one connection it is told to calm
// down and disconnected.
func TestIncompleteRequestsBounded(t *testing.T) {
	e := newEnv(t)
	raw := dialRaw(t, e)
	if err := raw.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	credit := make(chan uint32, 1000) // connection-level WINDOW_UPDATEs
	goaway := make(chan http2.ErrCode, 1)
	go func() {
		for {
			f, err := raw.fr.ReadFrame()
			if err != nil {
				close(goaway)
				return
			}
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					credit <- f.Increment
				}
			case *http2.GoAwayFrame:
				goaway <- f.ErrCode
				return
			}
		}
	}()
	tok := e.token("web-1")
	window := int64(65535)
	const chunk = 60000 // within a stream's window
	deadline := time.After(30 * time.Second)
	// Stop writing once past the bound, so that the server, closing the
	// connection, has nothing unread (which would turn its FIN into a RST
	// that loses the GOAWAY).
	var sent int64
	// await waits for n bytes of connection credit; false if the server
	// said GOAWAY (checked) or closed.
	await := func(n int64) bool {
		for window < n {
			select {
			case inc := <-credit:
				window += int64(inc)
			case code, ok := <-goaway:
				if !ok {
					t.Fatal("connection closed without GOAWAY")
				}
				if code != http2.ErrCodeEnhanceYourCalm {
					t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
				}
				return false
			case <-deadline:
				t.Fatalf("no GOAWAY after 30 s (%d bytes sent)", sent)
			}
		}
		return true
	}
	for id := uint32(1); sent <= 4<<20+65535; id += 2 {
		raw.openHeaders(id, tok)
		data := binary.BigEndian.AppendUint32([]byte{0}, 4<<20) // announces 4 MiB
		data = append(data, make([]byte, chunk-5)...)
		for len(data) > 0 { // frames of at most 16 KiB, HTTP/2's default
			n := min(len(data), 16384)
			if !await(int64(n)) {
				return
			}
			if err := raw.fr.WriteData(id, false, data[:n]); err != nil {
				t.Fatalf("write: %v (the server closed the connection before the bound)", err)
			}
			data = data[n:]
			window -= int64(n)
			sent += int64(n)
		}
	}
	select {
	case code, ok := <-goaway:
		if !ok {
			t.Fatal("connection closed without GOAWAY")
		}
		if code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
		}
	case <-deadline:
		t.Fatalf("%d bytes of incomplete requests were all held", sent)
	}
}
