package apiserver_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/authn"
)

func TestSecretsNeedViewSecretDataAndListsRedact(t *testing.T) {
	verify := func(_ context.Context, tok string) (authn.Identity, error) { return authn.User(tok, nil), nil }
	env := apiservertest.Start(t, apiserver.Options{Authenticator: &authn.Authenticator{LocalhostIsAdmin: true, VerifyUserToken: verify}})
	h := env.API.HandlerFor(authn.HTTPS)
	plain := env.API.HandlerFor(authn.Plain)
	screenReq(t, plain, "PUT", "/meshes/default", loopbackPeer, "localhost", "application/json", `{}`).want(t, 201)
	screenReq(t, plain, "PUT", "/meshes/default/secrets/s1", loopbackPeer, "localhost", "application/json", `{"data":"c3VwZXJzZWNyZXQ="}`).want(t, 201)
	screenReq(t, plain, "PUT", "/global-secrets/g1", loopbackPeer, "localhost", "application/json", `{"data":"c3VwZXJzZWNyZXQ="}`).want(t, 201)

	// The admin reads one secret's data, but no list carries it.
	if r := screenReq(t, plain, "GET", "/meshes/default/secrets/s1", loopbackPeer, "localhost", "", "").want(t, 200); !strings.Contains(string(r.body), "c3VwZXJzZWNyZXQ=") {
		t.Errorf("admin GET secret: %s", r.body)
	}
	for _, p := range []string{"/secrets", "/meshes/default/secrets", "/global-secrets", "/globalsecrets"} {
		r := screenReq(t, plain, "GET", p, loopbackPeer, "localhost", "", "").want(t, 200)
		var lb apiserver.ListBody
		r.decode(t, &lb)
		if strings.Contains(string(r.body), "c3VwZXJzZWNyZXQ=") || lb.Total == 0 || !strings.Contains(string(lb.Items[0]), apiserver.RedactedData) {
			t.Errorf("GET %s: %s", p, r.body)
		}
	}

	// An authenticated user without a binding: non-secret reads only.
	auth := []string{"Authorization", "Bearer dave"}
	screenReq(t, h, "GET", "/meshes/default", remotePeer, "cp", "", "", auth...).want(t, 200)
	for _, p := range []string{"/meshes/default/secrets/s1", "/global-secrets/g1"} {
		e := screenReq(t, h, "GET", p, remotePeer, "cp", "", "", auth...).want(t, 403).errorBody(t)
		if !strings.Contains(e.Detail, "VIEW_SECRET_DATA") || !strings.Contains(e.Detail, `"dave"`) {
			t.Errorf("GET %s: detail %q", p, e.Detail)
		}
	}
	// A list shows only what the caller may GET: no secret at all here.
	r := screenReq(t, h, "GET", "/meshes/default/secrets", remotePeer, "cp", "", "", auth...).want(t, 200)
	var lb apiserver.ListBody
	if err := json.Unmarshal(r.body, &lb); err != nil || lb.Total != 0 {
		t.Errorf("dave's list of secrets: %s", r.body)
	}
	e := screenReq(t, h, "PUT", "/meshes/other", remotePeer, "cp", "application/json", `{}`, auth...).want(t, 403).errorBody(t)
	if !strings.Contains(e.Detail, `lacks CREATE on Mesh "other"`) {
		t.Errorf("PUT mesh detail %q", e.Detail)
	}
	screenReq(t, h, "PUT", "/meshes/default", remotePeer, "cp", "application/json", `{}`, auth...).want(t, 403)
	screenReq(t, h, "DELETE", "/meshes/default/secrets/s1", remotePeer, "cp", "", "", auth...).want(t, 403)
	if _, err := env.Manager.Get(t.Context(), "Secret", "default", "s1"); err != nil {
		t.Fatalf("refused DELETE changed something: %v", err)
	}
}
