// Package apiservertest starts a meshca API server over an in-memory store
// for tests of the API and of its clients (meshctl).
//
// The server's CA registry holds one fake backend registered as type
// "provided": its conf is `{"caCert": {"secret": NAME}}`, Validate refuses a
// secret that does not exist in the mesh (field "conf.caCert.secret") and the
// secret counts as in use, so deleting it is refused while a Mesh uses it.
package apiservertest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/ca"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// FakeBackendType is the mTLS backend type served by the fake backend.
const FakeBackendType = api.BackendProvided

// Env is a running test server and what it is built from.
type Env struct {
	Server  *httptest.Server
	API     *apiserver.Server
	Manager *resources.Manager
	Store   store.Store
}

// Start starts a test server; it is closed when the test ends. opts may
// set anything but is usually zero; its Logger defaults to a discarding one.
func Start(t testing.TB, opts apiserver.Options) *Env {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
		opts.Logger = logger
	}
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Logger: logger}, map[string]ca.Constructor{
		FakeBackendType: func(d ca.Deps) (ca.Backend, error) { return &fakeBackend{store: d.Store}, nil },
	})
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	mgr := resources.NewManager(st, reg, resources.Options{Logger: logger})
	srv := apiserver.New(mgr, opts)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &Env{Server: hs, API: srv, Manager: mgr, Store: st}
}

type fakeConf struct {
	CACert struct {
		Secret string `json:"secret"`
	} `json:"caCert"`
}

type fakeBackend struct{ store store.Store }

func (f *fakeBackend) conf(b api.MTLSBackend) (fakeConf, error) {
	var c fakeConf
	if len(b.Conf) == 0 {
		return c, api.FieldErr("conf.caCert.secret", "must be set")
	}
	if err := json.Unmarshal(b.Conf, &c); err != nil {
		return c, api.FieldErr("conf", "%v", err)
	}
	if c.CACert.Secret == "" {
		return c, api.FieldErr("conf.caCert.secret", "must be set")
	}
	return c, nil
}

func (f *fakeBackend) Validate(ctx context.Context, mesh string, b api.MTLSBackend) error {
	c, err := f.conf(b)
	if err != nil {
		return err
	}
	_, err = f.store.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: mesh, Name: c.CACert.Secret})
	if errors.Is(err, store.ErrNotFound) {
		return api.FieldErr("conf.caCert.secret", "secret %q does not exist in mesh %q", c.CACert.Secret, mesh)
	}
	return err
}

func (f *fakeBackend) Ensure(context.Context, string, api.MTLSBackend) error { return nil }

func (f *fakeBackend) TrustBundle(context.Context, string, api.MTLSBackend) ([]byte, error) {
	return nil, errors.New("fake backend: no trust bundle")
}

func (f *fakeBackend) Issue(context.Context, string, api.MTLSBackend, ca.IssueRequest) (ca.Issued, error) {
	return ca.Issued{}, errors.New("fake backend: issues nothing")
}

func (f *fakeBackend) UsedSecrets(b api.MTLSBackend) []string {
	c, err := f.conf(b)
	if err != nil {
		return nil
	}
	return []string{c.CACert.Secret}
}
