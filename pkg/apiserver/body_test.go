package apiserver_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

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
	// and then stall: together they hold the whole budget.
	var writers []*io.PipeWriter
	done := make(chan int, 2)
	for i := range 2 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		body := secret(fmt.Sprintf("slow-%d", i))
		req, err := http.NewRequestWithContext(t.Context(), "PUT", fmt.Sprintf("%s/global-secrets/slow-%d", base, i), pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		go func() { _, _ = io.WriteString(pw, body[:10]) }()
	}

	waitFor503 := func() response {
		t.Helper()
		for range 200 {
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

	for i, pw := range writers {
		go func() {
			_, _ = io.WriteString(pw, secret(fmt.Sprintf("slow-%d", i))[10:])
			pw.Close()
		}()
	}
	for range 2 {
		if status := <-done; status != http.StatusCreated {
			t.Fatalf("slow PUT: status %d, want 201", status)
		}
	}
	do(t, "GET", base+"/global-secrets/third", "", "").want(t, 404)
	do(t, "PUT", base+"/global-secrets/third", "application/json", secret("third")).want(t, 201)
}
