package apiserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/authn"
	"meshca/pkg/leader"
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

// TestIndexListsControlPlanes: GET / carries the instances sharing the store
// for a caller that authenticated, not for an anonymous one (it names their
// addresses), and still answers, without the list, when listing fails.
func TestIndexListsControlPlanes(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	list := []leader.Instance{
		{ID: "cp-a", Address: "10.0.0.1:5681", Version: "1.2.3", Leader: true, LeaderSince: &since, StartedAt: since, LastHeartbeat: since, Online: true},
		{ID: "cp-b", Address: "10.0.0.2:5681", Version: "1.2.3", StartedAt: since, LastHeartbeat: since, Online: true},
	}
	var fail error
	env := apiservertest.Start(t, apiserver.Options{
		Authenticator: &authn.Authenticator{LocalhostIsAdmin: true},
		ControlPlanes: func(context.Context) ([]leader.Instance, error) { return list, fail },
	})
	plain, https := env.API.HandlerFor(authn.Plain), env.API.HandlerFor(authn.HTTPS)

	var idx struct {
		Product       string
		ControlPlanes []leader.Instance
	}
	decode := func(r response) {
		t.Helper()
		idx.Product, idx.ControlPlanes = "", nil
		if err := json.Unmarshal(r.want(t, 200).body, &idx); err != nil {
			t.Fatal(err)
		}
	}
	decode(screenReq(t, plain, "GET", "/", loopbackPeer, "localhost", "", ""))
	if idx.Product != "Kuma" || len(idx.ControlPlanes) != 2 || !idx.ControlPlanes[0].Leader || idx.ControlPlanes[0].LeaderSince == nil ||
		!idx.ControlPlanes[0].LeaderSince.Equal(since) || idx.ControlPlanes[1].Leader || idx.ControlPlanes[1].Address != "10.0.0.2:5681" {
		t.Errorf("admin's index: %+v", idx)
	}
	decode(screenReq(t, https, "GET", "/", remotePeer, "cp.example", "", ""))
	if idx.Product != "Kuma" || idx.ControlPlanes != nil {
		t.Errorf("anonymous index lists control planes: %+v", idx)
	}
	fail = errors.New("database away")
	decode(screenReq(t, plain, "GET", "/", loopbackPeer, "localhost", "", ""))
	if idx.Product != "Kuma" || idx.ControlPlanes != nil {
		t.Errorf("index when listing fails: %+v", idx)
	}
}
