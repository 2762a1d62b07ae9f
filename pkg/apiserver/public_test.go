package apiserver_test

import (
	"net/http"
	"testing"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/authn"
)

// TestPublicPaths: Options.PublicPaths answer anonymous GETs over HTTPS;
// everything else still needs credentials, and no other method is public.
func TestPublicPaths(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) })
	env := apiservertest.Start(t, apiserver.Options{
		PublicPaths: []string{"/gui/", "/gui/app.js"},
		Extra:       map[string]http.Handler{"GET /gui/": page},
	})
	https := env.API.HandlerFor(authn.HTTPS)
	screenReq(t, https, "GET", "/gui/", loopbackPeer, "cp.example", "", "").want(t, 200)
	screenReq(t, https, "GET", "/gui/app.js", loopbackPeer, "cp.example", "", "").want(t, 200)
	screenReq(t, https, "GET", "/gui/api/meshes", loopbackPeer, "cp.example", "", "").want(t, 401)
	screenReq(t, https, "GET", "/gui/other", loopbackPeer, "cp.example", "", "").want(t, 401)
	screenReq(t, https, "PUT", "/gui/", loopbackPeer, "cp.example", "application/json", "{}").want(t, 401)
}
