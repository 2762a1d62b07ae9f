package apiserver_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/authn"
)

// TestHTTPSClientRate: on the HTTPS listener a client over its rate gets
// 429 with Retry-After, before authentication; the plain loopback listener
// is not limited.
func TestHTTPSClientRate(t *testing.T) {
	env := apiservertest.Start(t, apiserver.Options{ClientRate: 0.001, ClientBurst: 2})
	tlsSrv := httptest.NewTLSServer(env.API.HandlerFor(authn.HTTPS))
	t.Cleanup(tlsSrv.Close)
	c := tlsSrv.Client()
	get := func(u string, c *http.Client) *http.Response {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range 2 {
		if r := get(tlsSrv.URL+"/", c); r.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d", i+1, r.StatusCode)
		}
	}
	r := get(tlsSrv.URL+"/meshes", c)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("over the rate: status %d, Retry-After %q; want 429 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	for range 5 {
		if r := get(env.Server.URL+"/", http.DefaultClient); r.StatusCode != http.StatusOK {
			t.Fatalf("plain listener: %d", r.StatusCode)
		}
	}
}
