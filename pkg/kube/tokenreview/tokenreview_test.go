package tokenreview_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshca/internal/kubetest"
	"meshca/internal/syncbuf"
	"meshca/pkg/dpagent"
	"meshca/pkg/kube/tokenreview"
	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
)

const wait = 30 * time.Second

// countingTransport counts the TokenReviews sent.
type countingTransport struct {
	rt      http.RoundTripper
	reviews *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/tokenreviews") {
		c.reviews.Add(1)
	}
	return c.rt.RoundTrip(r)
}

type env struct {
	client  kubernetes.Interface
	reviews *atomic.Int64
}

func start(t *testing.T) *env { return startTB(t) }

func startTB(t testing.TB) *env {
	t.Helper()
	srv := kubetest.Start(t)
	cfg := rest.CopyConfig(srv.Config)
	e := &env{reviews: new(atomic.Int64)}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt: rt, reviews: e.reviews} }
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.client = client
	for _, ns := range []string{"payments", "billing"} {
		if _, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// token creates ServiceAccount ns/sa (if need be) and mints a token for it
// with the TokenRequest API, as kubelet does for a pod.
func (e *env) token(t testing.TB, ns, sa string, audiences ...string) string {
	t.Helper()
	_, err := e.client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	tr, err := e.client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func TestServiceAccountTokens(t *testing.T) {
	e := start(t)
	web := e.token(t, "payments", "web")
	api := e.token(t, "billing", "api")

	t.Run("verdicts", func(t *testing.T) {
		var now atomic.Pointer[time.Time]
		t0 := time.Now()
		now.Store(&t0)
		a := tokenreview.New(e.client, tokenreview.Options{Now: func() time.Time { return *now.Load() }})
		reg := prometheus.NewRegistry()
		reg.MustRegister(a.Collectors()...)

		before := e.reviews.Load()
		mesh, name, until, err := a.VerifyNode(t.Context(), web, "default.web-1.payments")
		if err != nil || mesh != "default" || name != "web-1.payments" {
			t.Fatalf("VerifyNode(payments token, payments dataplane) = %q %q %v", mesh, name, err)
		}
		if !until.After(t0) || until.After(t0.Add(tokenreview.DefaultCacheTTL)) {
			t.Errorf("verdict until %v, want within the cache TTL from %v", until, t0)
		}
		// Cached: a second stream of the same pod costs no review.
		if _, _, _, err := a.VerifyNode(t.Context(), web, "default.web-2.payments"); err != nil {
			t.Fatal(err)
		}
		if n := e.reviews.Load() - before; n != 1 {
			t.Errorf("%d TokenReviews for two verifications of one token, want 1", n)
		}

		refused := map[string]struct{ token, node, want string }{
			"another namespace's token":   {api, "default.web-1.payments", `namespace "billing"`},
			"garbage token":               {"garbage", "default.web-1.payments", "does not accept"},
			"dataplane without namespace": {web, "default.web-1", "<name>.<namespace>"},
		}
		for what, c := range refused {
			_, _, _, err := a.VerifyNode(t.Context(), c.token, c.node)
			if !errors.Is(err, sds.ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: err = %v, want a refusal mentioning %q", what, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), c.token) {
				t.Errorf("%s: the error holds the token", what)
			}
		}

		// A token whose ServiceAccount is deleted is refused once its
		// cached review lapsed.
		gone := e.token(t, "payments", "gone")
		if _, _, _, err := a.VerifyNode(t.Context(), gone, "default.db-1.payments"); err != nil {
			t.Fatal(err)
		}
		if err := e.client.CoreV1().ServiceAccounts("payments").Delete(t.Context(), "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := a.VerifyNode(t.Context(), gone, "default.db-1.payments"); err != nil {
			t.Fatalf("within the cache TTL: %v", err)
		}
		// The API server looks ServiceAccounts up through its informer
		// cache, so the deletion may take a moment to reach its reviews.
		later := t0
		for deadline := time.Now().Add(wait); ; {
			later = later.Add(tokenreview.DefaultCacheTTL + time.Second)
			now.Store(&later)
			_, _, _, err := a.VerifyNode(t.Context(), gone, "default.db-1.payments")
			if errors.Is(err, sds.ErrRejected) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("deleted ServiceAccount's token after the cache TTL: %v, want refused", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Cache hits: web's second verification, gone's within the TTL.
		// Refused: garbage, then gone once deleted.
		if hits := metric(t, reg, "meshca_sds_token_review_cache_hits_total", ""); hits != 2 {
			t.Errorf("%v cache hits, want 2", hits)
		}
		if n := metric(t, reg, "meshca_sds_token_reviews_total", "refused"); n != 2 {
			t.Errorf("%v refused reviews, want 2", n)
		}
		if n := metric(t, reg, "meshca_sds_token_reviews_total", "authenticated"); n < 3 {
			t.Errorf("%v authenticated reviews, want at least 3", n)
		}
		if n := metric(t, reg, "meshca_sds_token_reviews_total", "error"); n != 0 {
			t.Errorf("%v failed reviews, want none", n)
		}
	})

	// A token bound to a pod, as kubelet projects it, serves the Dataplane
	// named after that pod only.
	t.Run("pod-bound token", func(t *testing.T) {
		pod, err := e.client.CoreV1().Pods("payments").Create(t.Context(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1"},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := e.client.CoreV1().ServiceAccounts("payments").CreateToken(t.Context(), "web", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := tokenreview.New(e.client, tokenreview.Options{})
		if _, _, _, err := a.VerifyNode(t.Context(), tr.Status.Token, "default.web-1.payments"); err != nil {
			t.Fatalf("pod web-1's token for Dataplane web-1.payments: %v", err)
		}
		_, _, _, err = a.VerifyNode(t.Context(), tr.Status.Token, "default.db-1.payments")
		if !errors.Is(err, sds.ErrRejected) || !strings.Contains(err.Error(), `bound to pod "web-1"`) {
			t.Fatalf("pod web-1's token for Dataplane db-1.payments: %v, want refused naming the pod", err)
		}
		id, _, err := a.Review(t.Context(), tr.Status.Token)
		if err != nil || id != (tokenreview.Identity{Namespace: "payments", ServiceAccount: "web", Pod: "web-1"}) {
			t.Fatalf("Review = %+v, %v", id, err)
		}
	})

	t.Run("audiences", func(t *testing.T) {
		a := tokenreview.New(e.client, tokenreview.Options{Audiences: []string{"meshca"}})
		if _, _, _, err := a.VerifyNode(t.Context(), web, "default.web-1.payments"); !errors.Is(err, sds.ErrRejected) {
			t.Errorf("token for the API server's audience = %v, want refused", err)
		}
		own := e.token(t, "payments", "web", "meshca")
		if _, _, _, err := a.VerifyNode(t.Context(), own, "default.web-1.payments"); err != nil {
			t.Errorf("token for audience meshca: %v", err)
		}
	})

	// Through the real SDS server and agent: the pod's token gets its
	// Dataplane's certificate; other namespaces' and garbage tokens are
	// refused for good; no token reaches a log.
	t.Run("sds", func(t *testing.T) {
		logs := new(syncbuf.Buffer)
		logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		src := sdstest.NewSource()
		want := sdstest.NewSecrets(t, "default", "web-1.payments", 1, time.Now())
		src.Set("default", "web-1.payments", want)
		tlsConf, caPEM, err := sds.LoadOrCreateServerTLS(t.TempDir(), "", "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := sds.NewServer(src, tokenreview.New(e.client, tokenreview.Options{}), logger, prometheus.NewRegistry())
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() { defer close(stopped); _ = srv.Serve(ctx, lis, tlsConf) }()
		t.Cleanup(func() { cancel(); <-stopped })

		run := func(t *testing.T, token string) (<-chan dpagent.Update, <-chan error) {
			updates, done, finished := make(chan dpagent.Update, 4), make(chan error, 1), make(chan struct{})
			actx, acancel := context.WithCancel(context.Background())
			tokenFile := filepath.Join(t.TempDir(), "token")
			writeFile(t, tokenFile, token)
			go func() {
				defer close(finished)
				done <- dpagent.Run(actx, dpagent.Config{CPAddress: lis.Addr().String(), CACertPEM: caPEM,
					Token: dpagent.TokenFromFile(tokenFile), Mesh: "default", Name: "web-1.payments",
					OutDir: filepath.Join(t.TempDir(), "out"), Logger: logger,
					InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
					OnUpdate: func(u dpagent.Update) { updates <- u }})
			}()
			t.Cleanup(func() {
				acancel()
				select {
				case <-finished:
				case <-time.After(wait):
					t.Error("agent did not stop")
				}
			})
			return updates, done
		}

		updates, done := run(t, web)
		select {
		case u := <-updates:
			if u.Serial.Int64() != 1 {
				t.Errorf("served serial %v, want 1", u.Serial)
			}
		case err := <-done:
			t.Fatalf("agent with the pod's token stopped: %v", err)
		case <-time.After(wait):
			t.Fatal("agent with the pod's token got nothing")
		}
		for what, tok := range map[string]string{"billing token": api, "garbage token": "garbage"} {
			updates, done := run(t, tok)
			select {
			case err := <-done:
				if !errors.Is(err, dpagent.ErrRefused) {
					t.Errorf("%s: Run = %v, want ErrRefused", what, err)
				}
			case u := <-updates:
				t.Errorf("%s: served %+v", what, u)
			case <-time.After(wait):
				t.Errorf("%s: neither served nor refused", what)
			}
		}
		out := logs.String()
		if !strings.Contains(out, `namespace \"billing\"`) {
			t.Errorf("the refusal of the billing token is not logged with its reason:\n%s", out)
		}
		for _, tok := range []string{web, api} {
			if strings.Contains(out, tok) || strings.Contains(out, tok[len(tok)-20:]) {
				t.Fatalf("a token appears in the logs:\n%s", out)
			}
		}
	})
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// metric returns the value of name (with label result, if given) in reg.
func metric(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := result == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					match = true
				}
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{result=%q}", name, result)
	return 0
}
