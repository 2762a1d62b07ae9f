package meshctl_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
)

func TestInspectControlPlanes(t *testing.T) {
	now := time.Now()
	body := `{"total":2,"items":[` +
		`{"id":"cp-a","address":"10.0.0.1:5681","version":"1.0.0","leader":true,"leaderSince":"` + now.Add(-2*time.Minute).Format(time.RFC3339) + `","startedAt":"` + now.Add(-time.Hour).Format(time.RFC3339) + `","lastHeartbeat":"` + now.Format(time.RFC3339) + `","online":true},` +
		`{"id":"cp-b","address":"10.0.0.2:5681","version":"1.0.0","leader":false,"startedAt":"` + now.Add(-time.Hour).Format(time.RFC3339) + `","lastHeartbeat":"` + now.Add(-time.Hour).Format(time.RFC3339) + `","online":false}],"next":null}`
	h := &harness{t: t, env: apiservertest.Start(t, apiserver.Options{Extra: map[string]http.Handler{
		"GET /control-planes": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		}),
	}})}
	out := h.run("inspect", "control-planes").ok(t).stdout
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("output:\n%s", out)
	}
	for _, want := range []string{"cp-a", "10.0.0.1:5681", "yes", "leads for", "online"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("leader row %q lacks %q", lines[1], want)
		}
	}
	for _, want := range []string{"cp-b", "no", "started", "offline"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("follower row %q lacks %q", lines[2], want)
		}
	}
	if r := h.run("inspect", "control-planes", "-o", "json").ok(t); !strings.Contains(r.stdout, `"cp-b"`) {
		t.Errorf("json output %q", r.stdout)
	}
	h.run("inspect", "control-planes", "-o", "xml").fails(t)
}
