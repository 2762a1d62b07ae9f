package apiserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
)

// TestBodyBudget: the bytes of request bodies in flight are bounded across
// all requests. While slow uploads hold the whole budget, another PUT is
// refused at once with 503 and Retry-After (not queued, not buffered), and
// other requests are still answered; once the uploads finish, PUTs work
// again and nothing refused was stored.
func TestBodyBudget(t *testing.T) {
	const maxBody = 64 << 10
	env := apiservertest.Start(t, apiserver.Options{MaxBodyBytes: maxBody, BodyBudgetBytes: 2 * maxBody})
	base := env.Server.URL
	secret := func(name string) string {
		body := fmt.Sprintf(`{"type":"GlobalSecret","name":%q,"data":"%s"}`, name, strings.Repeat("A", maxBody-100))
		return body
	}

	// Two uploads that send their headers (Content-Length near the limit)
	// and the start of the body, then stall: together they hold the whole
	// budget. Raw connections, so nothing buffers or delays them.
	host := strings.TrimPrefix(base, "http://")
	var conns []net.Conn
	var bodies []string
	for i := range 2 {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := secret(fmt.Sprintf("slow-%d", i))
		fmt.Fprintf(c, "PUT /global-secrets/slow-%d HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", i, host, len(body), body[:10])
		conns, bodies = append(conns, c), append(bodies, body)
	}
	// Both admitted before the third PUT: one that came in while the third
	// held its share would be refused, and its body (never sent in full)
	// never hold the budget.
	held := int64(len(bodies[0]) + len(bodies[1]))
	for deadline := time.Now().Add(10 * time.Second); apiserver.BodyBytesInFlight(env.API) != held; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the slow uploads hold %d bytes of the budget, want %d", apiserver.BodyBytesInFlight(env.API), held)
		}
	}

	waitFor503 := func() response {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			r := do(t, "PUT", base+"/global-secrets/third", "application/json", secret("third"))
			if r.status == http.StatusServiceUnavailable {
				return r
			}
			if r.status != http.StatusCreated {
				t.Fatalf("third PUT: status %d: %s", r.status, r.body)
			}
			// Created before the slow ones were admitted: delete and retry.
			do(t, "DELETE", base+"/global-secrets/third", "", "").want(t, 200)
		}
		t.Fatal("a PUT over the body budget was never refused")
		return response{}
	}
	r := waitFor503()
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if e := r.errorBody(t); !strings.Contains(e.Detail, "retry") {
		t.Errorf("503 detail %q does not say to retry", e.Detail)
	}
	do(t, "GET", base+"/", "", "").want(t, 200)

	for i, c := range conns {
		if _, err := io.WriteString(c, bodies[i][10:]); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("slow PUT: status %d, want 201", resp.StatusCode)
		}
	}
	do(t, "GET", base+"/global-secrets/third", "", "").want(t, 404)
	do(t, "PUT", base+"/global-secrets/third", "application/json", secret("third")).want(t, 201)
}
