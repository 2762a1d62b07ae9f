package apiserver_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/authn"
	"meshca/pkg/store"
)

// screenReq sends one request straight to the handler of listener l, as if
// from peer with the given Host header.
func screenReq(t *testing.T, h http.Handler, method, path, peer, host, contentType, body string, hdr ...string) response {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	req.RemoteAddr, req.Host = peer, host
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	req.Header.Set("Origin", "https://evil.example")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	for k := range w.Header() {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("%s %s answered CORS header %s", method, path, k)
		}
	}
	return response{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
}

const loopbackPeer, remotePeer = "127.0.0.1:40000", "192.0.2.7:40000"

func TestPlainListenerHostAndContentType(t *testing.T) {
	env := apiservertest.Start(t, apiserver.Options{})
	plain := env.API.HandlerFor(authn.Plain)
	screenReq(t, plain, "PUT", "/global-secrets/s1", loopbackPeer, "localhost:5681", "application/json", `{"data":"c2VjcmV0"}`).want(t, 201)

	// A page whose DNS name was rebound to 127.0.0.1 reaches us with its own Host.
	r := screenReq(t, plain, "GET", "/global-secrets/s1", loopbackPeer, "evil.example:5681", "", "").want(t, 403)
	if strings.Contains(string(r.body), "c2VjcmV0") {
		t.Fatalf("foreign Host got the secret: %s", r.body)
	}
	for _, host := range []string{"localhost", "127.0.0.1:5681", "[::1]:5681"} {
		screenReq(t, plain, "GET", "/global-secrets/s1", loopbackPeer, host, "", "").want(t, 200)
	}

	// Cross-site forms can send text/plain without a preflight: refused.
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		screenReq(t, plain, "PUT", "/global-secrets/s2", loopbackPeer, "localhost", ct, `{"data":"c2VjcmV0"}`).want(t, 415)
	}
	screenReq(t, plain, "PUT", "/global-secrets/s2", loopbackPeer, "localhost", "application/yaml", "data: c2VjcmV0\n").want(t, 201)
	screenReq(t, plain, "PUT", "/global-secrets/s3", loopbackPeer, "localhost", "application/json; charset=utf-8", `{"data":"c2VjcmV0"}`).want(t, 201)
	screenReq(t, plain, "DELETE", "/global-secrets/s3", loopbackPeer, "localhost", "", "").want(t, 200)
	if _, err := env.Store.Get(t.Context(), store.Key{Type: "GlobalSecret", Name: "s2"}); err != nil {
		t.Fatalf("s2 not stored: %v", err)
	}
}

func TestRemotePlainAndHTTPSNeedCredentials(t *testing.T) {
	env := apiservertest.Start(t, apiserver.Options{AllowRemotePlain: true})
	plain, https := env.API.HandlerFor(authn.Plain), env.API.HandlerFor(authn.HTTPS)

	// A remote peer (allowed on the plain listener) is anonymous.
	r := screenReq(t, plain, "GET", "/meshes", remotePeer, "cp.example:5681", "", "").want(t, 401)
	if r.header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	screenReq(t, plain, "GET", "/", remotePeer, "cp.example:5681", "", "").want(t, 200)
	// A loopback peer is still held to a loopback Host.
	screenReq(t, plain, "GET", "/meshes", loopbackPeer, "evil.example", "", "").want(t, 403)

	// Over HTTPS, even a loopback client must authenticate: only GET / and probes are public.
	screenReq(t, https, "GET", "/", loopbackPeer, "localhost:5682", "", "").want(t, 200)
	screenReq(t, https, "GET", "/healthz", loopbackPeer, "localhost:5682", "", "").want(t, 200)
	for _, p := range []string{"/meshes", "/global-secrets", "/metrics", "/meshes/default"} {
		screenReq(t, https, "GET", p, loopbackPeer, "cp.example", "", "").want(t, 401)
	}
	screenReq(t, https, "PUT", "/meshes/default", loopbackPeer, "cp.example", "application/json", "{}").want(t, 401)
	// A malformed Authorization header is refused, never treated as anonymous or admin.
	for _, h := range []string{"Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer "} {
		e := screenReq(t, plain, "GET", "/meshes", loopbackPeer, "localhost", "", "", "Authorization", h).want(t, 401).errorBody(t)
		if !strings.Contains(e.Detail, "Bearer") {
			t.Errorf("Authorization %q: detail %q", h, e.Detail)
		}
	}
}

func TestLocalhostIsNotAdminWhenDisabled(t *testing.T) {
	env := apiservertest.Start(t, apiserver.Options{Authenticator: &authn.Authenticator{LocalhostIsAdmin: false}})
	screenReq(t, env.API.HandlerFor(authn.Plain), "GET", "/meshes", loopbackPeer, "localhost", "", "").want(t, 401)
}

func TestBearerTokenIdentity(t *testing.T) {
	var seen authn.Identity
	verify := func(_ context.Context, tok string) (authn.Identity, error) {
		if tok != "good" {
			return authn.Identity{}, fmt.Errorf("%w: bad signature", authn.ErrUnauthenticated)
		}
		return authn.User("alice", []string{"team-a"}), nil
	}
	env := apiservertest.Start(t, apiserver.Options{
		Authenticator: &authn.Authenticator{LocalhostIsAdmin: true, VerifyUserToken: verify},
		Extra: map[string]http.Handler{"GET /whoami": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen, _ = authn.FromContext(r.Context())
		})},
	})
	https := env.API.HandlerFor(authn.HTTPS)
	screenReq(t, https, "GET", "/whoami", remotePeer, "cp.example", "", "", "Authorization", "Bearer good").want(t, 200)
	if seen.Name != "alice" || !seen.InGroup("team-a") || !seen.InGroup(authn.GroupAuthenticated) || seen.IsAdmin() {
		t.Fatalf("identity %+v", seen)
	}
	// A bad token on the plain listener is refused, not downgraded to the loopback admin.
	e := screenReq(t, env.API.HandlerFor(authn.Plain), "GET", "/whoami", loopbackPeer, "localhost", "", "", "Authorization", "Bearer forged").want(t, 401).errorBody(t)
	if strings.Contains(e.Detail, "forged") {
		t.Errorf("401 echoes the token: %q", e.Detail)
	}
}
