package controlplane

// The CAs clients pin (proxies the data-plane server's, zones a global's
// KDS server's, users the HTTPS API's) are one per deployment, not one per instance: with a shared store
// they live in it, and every instance serves with them.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"meshca/pkg/atomicfile"
	"meshca/pkg/sds"
	"meshca/pkg/store"
)

// TypeServerCA is the internal store type of a shared server CA (never
// served by the HTTP API: it holds the CA's key).
const TypeServerCA = "ServerCA"

type serverCASpec struct {
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
}

// shareServerCA makes files' CA under dataDir the one in st: an instance
// whose data directory has none (or another) takes the stored one; the
// first instance stores its own (or a new one). The server certificate is
// then issued from it by sds.LoadOrCreateTLS as usual.
func shareServerCA(ctx context.Context, st store.Store, files sds.ServerFiles, dataDir string, logger *slog.Logger) error {
	key := store.Key{Type: TypeServerCA, Name: files.CA}
	rec, err := st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		local, lerr := localCA(files, dataDir)
		if lerr != nil {
			return lerr
		}
		b, merr := json.Marshal(local)
		if merr != nil {
			return merr
		}
		cerr := store.Create(ctx, st, store.Record{Key: key, Spec: b})
		if cerr == nil {
			logger.Info("stored this instance's server CA for the others to share", "file", files.CA)
			return nil
		}
		if !errors.Is(cerr, store.ErrAlreadyExists) {
			return fmt.Errorf("store %s: %w", files.CA, cerr)
		}
		// Another instance stored its CA first: use that one.
		rec, err = st.Get(ctx, key)
	}
	if err != nil {
		return fmt.Errorf("read the shared %s: %w", files.CA, err)
	}
	var spec serverCASpec
	if err := json.Unmarshal(rec.Spec, &spec); err != nil {
		return fmt.Errorf("the shared %s is unreadable: %w", files.CA, err)
	}
	if _, err := tls.X509KeyPair([]byte(spec.CertPEM), []byte(spec.KeyPEM)); err != nil {
		return fmt.Errorf("the shared %s is unusable: %w", files.CA, err)
	}
	certPath, keyPath := filepath.Join(dataDir, files.CA), filepath.Join(dataDir, files.CAKey)
	if cur, err := os.ReadFile(certPath); err == nil {
		if string(cur) == spec.CertPEM {
			return nil
		}
		logger.Warn("replacing this instance's server CA with the one the other instances share", "file", certPath)
	}
	// Key first: a CA certificate without its key would be unusable.
	if err := atomicfile.Write(keyPath, []byte(spec.KeyPEM), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, []byte(spec.CertPEM), 0o644)
}

// localCA returns the CA under dataDir, created first when there is none.
func localCA(files sds.ServerFiles, dataDir string) (serverCASpec, error) {
	certPath, keyPath := filepath.Join(dataDir, files.CA), filepath.Join(dataDir, files.CAKey)
	if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
		if _, _, err := sds.LoadOrCreateTLS(files, dataDir, "", "", nil, time.Now); err != nil {
			return serverCASpec{}, err
		}
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return serverCASpec{}, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return serverCASpec{}, err
	}
	return serverCASpec{CertPEM: string(certPEM), KeyPEM: string(keyPEM)}, nil
}

// shareServerCAs shares the generated server CAs when the store is shared
// (PostgreSQL; Kubernetes, where a restarted pod's data directory may be
// new) — an operator's own certificates are the operator's to distribute.
func shareServerCAs(ctx context.Context, cfg Config, st store.Store, logger *slog.Logger) error {
	if storeName(cfg) != "postgres" && !cfg.kubernetes() {
		return nil
	}
	if cfg.mode() == ModeGlobal && cfg.KDSTLSCert == "" && cfg.KDSTLSKey == "" {
		if err := shareServerCA(ctx, st, kdsServerFiles(), cfg.DataDir, logger); err != nil {
			return fmt.Errorf("zone sync TLS: %w", err)
		}
	}
	if cfg.mode() != ModeGlobal && cfg.DPServerTLSCert == "" && cfg.DPServerTLSKey == "" {
		if err := shareServerCA(ctx, st, sds.DPServerFiles(), cfg.DataDir, logger); err != nil {
			return fmt.Errorf("dp server TLS: %w", err)
		}
	}
	if cfg.APITLSAddress != "" && cfg.APITLSCert == "" && cfg.APITLSKey == "" {
		if err := shareServerCA(ctx, st, apiServerFiles(), cfg.DataDir, logger); err != nil {
			return fmt.Errorf("api TLS: %w", err)
		}
	}
	return nil
}
