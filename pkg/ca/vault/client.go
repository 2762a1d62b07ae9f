package vault

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"meshca/pkg/api"
)

// material is what a backend's DataSources resolve to. It is held only in
// memory, never logged.
type material struct {
	caCert     []byte
	token      string
	clientCert []byte
	clientKey  []byte
}

// resolve reads every DataSource of the conf; errors carry the field path.
func (b *backend) resolve(ctx context.Context, mesh string, f *FromCp) (material, error) {
	var m material
	v := &api.ValidationError{}
	get := func(ds *api.DataSource, field string) []byte {
		if ds == nil {
			return nil
		}
		data, err := b.sources.Resolve(ctx, mesh, ds, field)
		if err != nil {
			v.AddErr("", err)
			return nil
		}
		return data
	}
	if f.TLS != nil && f.TLS.CaCert != nil {
		m.caCert = get(f.TLS.CaCert, fCaCert)
		if m.caCert != nil && !x509.NewCertPool().AppendCertsFromPEM(m.caCert) {
			v.Addf(fCaCert, "holds no PEM certificate")
		}
	}
	switch {
	case f.Auth.Token != nil:
		tok := strings.TrimSpace(string(get(f.Auth.Token, fAuthToken)))
		if tok == "" && v.OrNil() == nil {
			v.Addf(fAuthToken, "the token is empty")
		}
		m.token = tok
	case f.Auth.TLS != nil:
		m.clientKey = get(f.Auth.TLS.ClientKey, fClientKey)
		m.clientCert = get(f.Auth.TLS.ClientCert, fClientCert)
		if m.clientKey != nil && m.clientCert != nil {
			if _, err := tls.X509KeyPair(m.clientCert, m.clientKey); err != nil {
				v.Addf(fAuthTLS, "clientCert and clientKey are not a PEM certificate and its private key: %v", err)
			}
		}
	}
	if err := v.OrNil(); err != nil {
		return material{}, err
	}
	return m, nil
}

// confHash identifies a (conf, resolved credentials) pair; a change of
// either gives a new client.
func confHash(raw json.RawMessage, m material) [32]byte {
	h := sha256.New()
	for _, part := range [][]byte{raw, m.caCert, []byte(m.token), m.clientCert, m.clientKey} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// newClient builds a Vault client for the conf. It does not contact Vault.
func newClient(f *FromCp, m material) (*vaultapi.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.TLS != nil {
		tc.ServerName = f.TLS.ServerName
		tc.InsecureSkipVerify = f.TLS.SkipVerify //nolint:gosec // the operator asked for it; a warning is logged
	}
	if len(m.caCert) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(m.caCert)
		tc.RootCAs = pool
	}
	if m.clientCert != nil {
		pair, err := tls.X509KeyPair(m.clientCert, m.clientKey)
		if err != nil {
			return nil, api.FieldErr(fAuthTLS, "clientCert and clientKey are not a PEM certificate and its private key: %v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc

	cfg := vaultapi.DefaultConfig()
	if cfg.Error != nil {
		// A VAULT_* variable of the control plane's environment is invalid;
		// everything it could set is overridden below.
		cfg.Error = nil
	}
	cfg.Address = f.Address
	cfg.AgentAddress = f.AgentAddress
	cfg.HttpClient.Transport = tr
	cfg.MaxRetries = 1
	cfg.MinRetryWait = 250 * time.Millisecond
	cfg.MaxRetryWait = time.Second
	cfg.Limiter = nil
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, api.FieldErr(fAddress, "cannot build a Vault client: %v", err)
	}
	c.ClearToken() // never use a VAULT_TOKEN of the environment
	if f.Namespace != "" {
		c.SetNamespace(f.Namespace)
	} else {
		c.ClearNamespace()
	}
	return c, nil
}

// state is the per-(mesh, backend) client and cache, valid for one conf hash.
type state struct {
	hash   [32]byte
	conf   *FromCp
	client *vaultapi.Client
	// login is set for auth methods that obtain a token by logging in.
	login func(ctx context.Context) (*vaultapi.Secret, error)

	mu          sync.Mutex
	tokenExpiry time.Time // login tokens; zero: no known expiry
	bundle      []byte
	ensuredFor  time.Duration // validity of the last successful test issuance

	cancel context.CancelFunc
	done   chan struct{}
}

func (s *state) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
}

// authenticate logs in (tls, aws) or looks the token up (token). For a
// renewable token it returns its TTL so that renewal can start.
func (b *backend) authenticate(ctx context.Context, st *state, m material) (renewTTL time.Duration, err error) {
	f := st.conf
	switch {
	case f.Auth.Token != nil:
		st.client.SetToken(m.token)
		sec, err := st.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			field := fAuthToken
			var re *vaultapi.ResponseError
			if f.Namespace != "" && errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
				field = fNamespace
			}
			return 0, vaultError("look up the token", "auth/token/lookup-self", err, field, field)
		}
		if sec == nil || sec.Data == nil {
			return 0, api.FieldErr(fAuthToken, "Vault returned no data for auth/token/lookup-self")
		}
		renewable, _ := sec.TokenIsRenewable()
		ttl, _ := sec.TokenTTL()
		if renewable && ttl > 0 {
			return ttl, nil
		}
		return 0, nil
	case f.Auth.TLS != nil:
		st.login = func(ctx context.Context) (*vaultapi.Secret, error) {
			sec, err := st.client.Logical().WriteWithContext(ctx, "auth/cert/login", map[string]any{})
			if err != nil {
				return nil, vaultError("log in with the TLS client certificate", "auth/cert/login", err, fAuthTLS, fAuthTLS)
			}
			return sec, nil
		}
	case f.Auth.AWS != nil:
		aws := newAWSLogin(*f.Auth.AWS)
		st.login = func(ctx context.Context) (*vaultapi.Secret, error) {
			data, err := aws.data(ctx)
			if err != nil {
				return nil, api.FieldErr(fAuthAWS, "log in with AWS: %v", err)
			}
			sec, err := st.client.Logical().WriteWithContext(ctx, "auth/aws/login", data)
			if err != nil {
				return nil, vaultError("log in with AWS", "auth/aws/login", err, fAuthAWS, fAuthAWS)
			}
			return sec, nil
		}
	}
	return 0, b.relogin(ctx, st)
}

// relogin obtains a fresh token for login-based auth methods.
func (b *backend) relogin(ctx context.Context, st *state) error {
	sec, err := st.login(ctx)
	if err != nil {
		return err
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return api.FieldErr(fAuth, "Vault's login answer holds no client token")
	}
	st.client.SetToken(sec.Auth.ClientToken)
	st.mu.Lock()
	st.tokenExpiry = time.Time{}
	if sec.Auth.LeaseDuration > 0 {
		st.tokenExpiry = b.now().Add(time.Duration(sec.Auth.LeaseDuration) * time.Second)
	}
	st.mu.Unlock()
	return nil
}

// freshToken logs in again when a login token is about to expire.
func (b *backend) freshToken(ctx context.Context, st *state) error {
	if st.login == nil {
		return nil
	}
	st.mu.Lock()
	exp := st.tokenExpiry
	st.mu.Unlock()
	if exp.IsZero() || b.now().Before(exp.Add(-loginMargin)) {
		return nil
	}
	return b.relogin(ctx, st)
}

// loginMargin is how long before its expiry a login token is replaced.
const loginMargin = 30 * time.Second

// renewLoop renews a renewable token at two thirds of its TTL until ctx is
// done, the token stops being renewable, or it expired.
func (b *backend) renewLoop(ctx context.Context, st *state, mesh, name string, ttl time.Duration) {
	log := b.log.With("mesh", mesh, "backend", name)
	expiry := b.now().Add(ttl)
	wait := renewWait(ttl)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.after(wait):
		}
		sec, err := st.client.Auth().Token().RenewSelfWithContext(ctx, 0)
		if ctx.Err() != nil {
			return
		}
		now := b.now()
		if err != nil || sec == nil || sec.Auth == nil {
			if err == nil {
				err = errors.New("the answer of Vault holds no auth")
			}
			if !now.Before(expiry) {
				log.Error("vault backend: the Vault token expired and could not be renewed; update its Secret",
					"error", vaultError("renew the token", "auth/token/renew-self", err, fAuthToken, fAuthToken))
				return
			}
			log.Warn("vault backend: cannot renew the Vault token, will retry",
				"error", vaultError("renew the token", "auth/token/renew-self", err, fAuthToken, fAuthToken),
				"expiresIn", expiry.Sub(now).Round(time.Second))
			wait = min(max(expiry.Sub(now)/3, time.Second), 30*time.Second)
			continue
		}
		ttl = time.Duration(sec.Auth.LeaseDuration) * time.Second
		expiry = now.Add(ttl)
		log.Debug("vault backend: renewed the Vault token", "ttl", ttl)
		if !sec.Auth.Renewable || ttl <= 0 {
			log.Info("vault backend: the Vault token can no longer be renewed", "expiresIn", ttl)
			return
		}
		wait = renewWait(ttl)
	}
}

func renewWait(ttl time.Duration) time.Duration {
	return max(ttl*2/3, 100*time.Millisecond)
}

func (b *backend) startRenewal(st *state, mesh, name string, ttl time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	st.done = make(chan struct{})
	go func() {
		defer close(st.done)
		b.renewLoop(ctx, st, mesh, name, ttl)
	}()
}

// describe is a short, secret-free description of a conf for logs.
func describe(f *FromCp) string {
	method := "token"
	switch {
	case f.Auth.TLS != nil:
		method = "tls"
	case f.Auth.AWS != nil:
		method = "aws"
	}
	return fmt.Sprintf("%s mount=%s role=%s auth=%s mode=%s", f.Address, f.mount(), f.Role, method, f.mode())
}

// warnInline logs, without the value, each credential written inline in the
// Mesh, and a disabled TLS verification.
func (b *backend) warnInline(mesh, name string, f *FromCp) {
	var fields []string
	if f.Auth.Token.IsInline() {
		fields = append(fields, fAuthToken)
	}
	if f.Auth.TLS != nil && f.Auth.TLS.ClientKey.IsInline() {
		fields = append(fields, fClientKey)
	}
	for _, field := range fields {
		b.log.Warn("vault backend: a credential is written inline in the Mesh; prefer a Secret or a file",
			"mesh", mesh, "backend", name, "field", field)
	}
	if f.TLS != nil && f.TLS.SkipVerify {
		b.log.Warn("vault backend: TLS verification of Vault is disabled (conf.fromCp.tls.skipVerify)",
			"mesh", mesh, "backend", name)
	}
}
