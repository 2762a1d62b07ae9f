package e2e

import (
	"crypto/tls"
	"io"
	"testing"
	"time"
)

// liveConn is a mutual-TLS connection kept open across a change.
type liveConn struct {
	client *tls.Conn
	ln     interface{ Close() error }
}

// openConn makes a mutual-TLS connection with an echo server and keeps it.
func openConn(t *testing.T, serverConf, clientConf *tls.Config) *liveConn {
	t.Helper()
	cc := clientConf.Clone()
	cc.InsecureSkipVerify = true // SPIFFE certificates name no host; the handshake test verifies chains
	l, err := tls.Listen("tcp", "127.0.0.1:0", serverConf)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), cc)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	lc := &liveConn{client: c, ln: l}
	lc.ping(t)
	return lc
}

func (c *liveConn) ping(t *testing.T) {
	t.Helper()
	_ = c.client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.client.Write([]byte("ping")); err != nil {
		t.Fatalf("live connection write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c.client, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("live connection read: %q %v", buf, err)
	}
}

func (c *liveConn) close() {
	c.client.Close()
	c.ln.Close()
}
