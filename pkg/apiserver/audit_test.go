package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshca/internal/syncbuf"
	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/audit"
	"meshca/pkg/authn"
)

func TestAuditTrail(t *testing.T) {
	var logs syncbuf.Buffer
	path := filepath.Join(t.TempDir(), "audit.log")
	rec, err := audit.New(slog.New(slog.NewJSONHandler(&logs, nil)), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	verify := func(_ context.Context, tok string) (authn.Identity, error) {
		if tok == "bad" {
			return authn.Identity{}, authn.ErrUnauthenticated
		}
		return authn.User(tok, []string{"team-a"}), nil
	}
	env := apiservertest.Start(t, apiserver.Options{Audit: rec, Authenticator: &authn.Authenticator{LocalhostIsAdmin: true, VerifyUserToken: verify}})
	plain, https := env.API.HandlerFor(authn.Plain), env.API.HandlerFor(authn.HTTPS)
	const data = "c2VjcmV0LWRhdGE="
	screenReq(t, plain, "PUT", "/global-secrets/g1", loopbackPeer, "localhost", "application/json", `{"data":"`+data+`"}`).want(t, 201)
	screenReq(t, plain, "PUT", "/global-secrets/g1", loopbackPeer, "localhost", "application/json", `{"data":"`+data+`"}`).want(t, 200)
	screenReq(t, plain, "PUT", "/meshes/m1?dryRun=true", loopbackPeer, "localhost", "application/json", `{}`).want(t, 200)
	screenReq(t, plain, "GET", "/global-secrets/g1", loopbackPeer, "localhost", "", "").want(t, 200) // a read: not audited
	screenReq(t, https, "DELETE", "/global-secrets/g1", remotePeer, "cp", "", "", "Authorization", "Bearer alice").want(t, 403)
	screenReq(t, https, "PUT", "/meshes/m2", remotePeer, "cp", "application/json", "{}", "Authorization", "Bearer bad").want(t, 401)
	screenReq(t, plain, "DELETE", "/global-secrets/g1", loopbackPeer, "localhost", "", "").want(t, 200)

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []audit.Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		got = append(got, e)
	}
	want := []struct{ user, action, typ, name, result string }{
		{authn.UserAdmin, "create", "GlobalSecret", "g1", "ok"},
		{authn.UserAdmin, "update", "GlobalSecret", "g1", "ok"},
		{authn.UserAdmin, "create", "Mesh", "m1", "ok"},
		{"alice", "delete", "GlobalSecret", "g1", "denied"},
		{"", "PUT", "", "", "unauthenticated"},
		{authn.UserAdmin, "delete", "GlobalSecret", "g1", "ok"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d audit lines, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.User != w.user || g.Action != w.action || g.Type != w.typ || g.Name != w.name || g.Result != w.result {
			t.Errorf("line %d: %+v, want %+v", i, g, w)
		}
	}
	if !got[2].DryRun || got[3].Status != 403 || len(got[3].Groups) == 0 {
		t.Errorf("dry run / status / groups not recorded: %+v %+v", got[2], got[3])
	}
	raw, _ := os.ReadFile(path)
	for _, leak := range []string{data, "Bearer", "alice\",\"groups\":null"} {
		if strings.Contains(string(raw)+logs.String(), leak) {
			t.Errorf("audit trail contains %q", leak)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"audit"`); n != len(want) {
		t.Errorf("%d audit lines in the log, want %d", n, len(want))
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v", fi.Mode().Perm())
	}
}
