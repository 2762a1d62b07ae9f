package kumactl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"meshca/pkg/controlplane"
)

type exchange struct {
	Client  string `json:"client"`
	Command string `json:"command"`
	Request struct {
		Method string          `json:"method"`
		Path   string          `json:"path"`
		Query  string          `json:"query"`
		Body   json.RawMessage `json:"body"`
	} `json:"request"`
	Kuma struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
		Text   string          `json:"text"`
	} `json:"kuma"`
}

func load(t *testing.T) []exchange {
	t.Helper()
	raw, err := os.ReadFile("testdata/kuma-2.14.3.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Exchanges []exchange `json:"exchanges"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Exchanges) == 0 {
		t.Fatal("no exchanges in the fixture")
	}
	return doc.Exchanges
}

// startControlPlane runs meshca's control plane in-process on free ports
// with the memory store and returns its API's base URL.
func startControlPlane(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Config{
			DataDir: t.TempDir(), Store: "memory", APIAddress: "127.0.0.1:0", DPServerAddress: "127.0.0.1:0",
			Version: "test", Logger: slog.New(slog.DiscardHandler),
			// As meshca-cp runs by default, and as Kuma treats localhost: admin.
			APILocalhostIsAdmin: true,
			Started:             func(api, _ net.Addr) { started <- api },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	select {
	case addr := <-started:
		return "http://" + addr.String()
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	return ""
}

// TestKumactlRequestsAndAnswers replays, in order, every request kumactl
// 2.14.3 sent to Kuma 2.14.3 and checks meshca's answer against Kuma's:
// the same status and, for JSON, every field of Kuma's answer present with
// the same JSON type (see conform for the documented exceptions).
func TestKumactlRequestsAndAnswers(t *testing.T) {
	base := startControlPlane(t)
	client := &http.Client{Timeout: 10 * time.Second}
	for i, ex := range load(t) {
		name := fmt.Sprintf("%d %s %s", i, ex.Request.Method, ex.Request.Path)
		url := base + ex.Request.Path
		if ex.Request.Query != "" {
			url += "?" + ex.Request.Query
		}
		var body io.Reader
		if len(ex.Request.Body) > 0 {
			body = bytes.NewReader(ex.Request.Body)
		}
		req, err := http.NewRequest(ex.Request.Method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != ex.Kuma.Status {
			t.Errorf("%s (%s): status %d, Kuma answered %d; meshca's answer: %s", name, ex.Command, resp.StatusCode, ex.Kuma.Status, got)
			continue
		}
		if ex.Kuma.Body == nil {
			// A dataplane token: a JWT, as Kuma's.
			if parts := strings.Split(strings.TrimSpace(string(got)), "."); len(parts) != 3 || ex.Kuma.Text == "" {
				t.Errorf("%s (%s): answer %q is not a JWT like Kuma's", name, ex.Command, got)
			}
			continue
		}
		var kuma, meshca any
		if err := json.Unmarshal(ex.Kuma.Body, &kuma); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got, &meshca); err != nil {
			t.Errorf("%s (%s): answer is not JSON: %s", name, ex.Command, got)
			continue
		}
		for _, d := range conform("", kuma, meshca) {
			t.Errorf("%s (%s): %s\nmeshca: %s", name, ex.Command, d, got)
		}
	}
}

// Fields of Kuma's answers that meshca does not give, and why:
//
//   - labels: Kuma labels resources with its zone (kuma.io/zone, kuma.io/origin,
//     kuma.io/env, ...); meshca has no zones and keeps only the labels written.
//   - kri: the Kuma Resource Identifier. kumactl computes it itself from type,
//     mesh and name (it shows in `kumactl get -o yaml` either way).
//   - zones: the zones a service runs in (a ServiceInsight's); meshca has none.
//   - addressPort: a service's name in Kuma's DNS (backend.mesh:80); meshca
//     serves no DNS.
var kumaOnly = map[string]bool{"labels": true, "kri": true, "zones": true, "addressPort": true}

// Objects whose keys are data (resource types, backend names, tags,
// versions): only the values of keys both have are compared.
var dataKeyed = map[string]bool{
	"policies": true, "resources": true, "kumaDp": true, "envoy": true,
	"issuedBackends": true, "supportedBackends": true, "tags": true,
}

// conform lists where meshca's answer m lacks what kumactl reads in Kuma's
// answer k: a missing field, or a value of another JSON type. List items
// are paired by mesh and name; items only Kuma has (its default mesh, its
// own global secrets and zone) are not compared.
func conform(path string, k, m any) []string {
	switch kv := k.(type) {
	case nil:
		return nil
	case map[string]any:
		mv, ok := m.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: Kuma has an object, meshca %s", orRoot(path), kind(m))}
		}
		var out []string
		keyed := dataKeyed[last(path)]
		for _, key := range sortedKeys(kv) {
			if kumaOnly[key] {
				continue
			}
			sub, present := mv[key]
			if !present {
				if !keyed {
					out = append(out, fmt.Sprintf("%s: missing (Kuma: %v)", join(path, key), kv[key]))
				}
				continue
			}
			out = append(out, conform(join(path, key), kv[key], sub)...)
		}
		return out
	case []any:
		mv, ok := m.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: Kuma has a list, meshca %s", orRoot(path), kind(m))}
		}
		var out []string
		for i, ki := range kv {
			if mi, ok := pair(ki, mv, i); ok {
				out = append(out, conform(fmt.Sprintf("%s[%d]", path, i), ki, mi)...)
			}
		}
		return out
	default:
		if kind(k) != kind(m) {
			return []string{fmt.Sprintf("%s: Kuma has a %s (%v), meshca %s (%v)", orRoot(path), kind(k), k, kind(m), m)}
		}
		return nil
	}
}

// pair finds the item of ms that matches Kuma's item k: the one with the
// same mesh and name for resources, the one at the same index otherwise.
func pair(k any, ms []any, i int) (any, bool) {
	ko, ok := k.(map[string]any)
	if !ok || ko["name"] == nil {
		if i < len(ms) {
			return ms[i], true
		}
		return nil, false
	}
	for _, m := range ms {
		if mo, ok := m.(map[string]any); ok && mo["name"] == ko["name"] && mo["mesh"] == ko["mesh"] {
			return m, true
		}
	}
	return nil, false
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func last(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return path
}

func orRoot(path string) string {
	if path == "" {
		return "(answer)"
	}
	return path
}

func TestConformReportsWhatKumactlWouldMiss(t *testing.T) {
	var kuma, meshca any
	_ = json.Unmarshal([]byte(`{"total":1,"items":[{"name":"a","mesh":"m","kri":"x","labels":{"k":"v"},"n":1,"o":{"s":"x"}},{"name":"kuma-only"}],"policies":{"P":{"total":1}}}`), &kuma)
	_ = json.Unmarshal([]byte(`{"total":1,"items":[{"name":"a","mesh":"m","n":"1"}],"policies":{}}`), &meshca)
	got := conform("", kuma, meshca)
	want := []string{"items[0].n: Kuma has a number (1), meshca string (1)", "items[0].o: missing (Kuma: map[s:x])"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("conform = %q, want %q", got, want)
	}
}
