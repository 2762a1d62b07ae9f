package controlplane

// The admission webhook of a control plane on Kubernetes: its TLS listener,
// with a certificate of a CA shared through the store (every replica serves
// one the same caBundle verifies), and its ValidatingWebhookConfiguration,
// which the control plane keeps pointing at itself with that caBundle.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"meshca/pkg/kube/admission"
	"meshca/pkg/kube/install"
	"meshca/pkg/resources"
	"meshca/pkg/sds"
	"meshca/pkg/store"
)

// DefaultWebhookAddress is Kuma's webhook port.
const DefaultWebhookAddress = ":5443"

// WebhookConfig configures the admission webhook (--environment kubernetes).
type WebhookConfig struct {
	// Address is the webhook's HTTPS listener ("" for none).
	Address string
	// URL, when set, is where the API server is told to send reviews (a
	// control plane outside the cluster); otherwise the Service.
	URL string
	// Service is the Service in front of the webhook, in the system
	// namespace, port 443 (default meshca-control-plane, as installed).
	Service string
	// TLSCert and TLSKey are the operator's certificate; the control plane
	// then leaves the configuration's caBundle to the operator.
	TLSCert, TLSKey string
}

// webhookRecheckFor is admission.Options.RecheckFor: the store's informers
// show a write within milliseconds; seconds cover a busy control plane, well
// within the configuration's 10 s timeout.
const webhookRecheckFor = 2 * time.Second

func webhookServerFiles() sds.ServerFiles {
	return sds.ServerFiles{CA: "webhook-server-ca.pem", CAKey: "webhook-server-ca.key", Cert: "webhook-server.pem", CertKey: "webhook-server.key",
		Name: "meshca admission webhook"}
}

// startAdmission serves the admission webhook for namespace's control plane
// with mgr's validation, registers its ValidatingWebhookConfiguration with
// kc's client, and returns the listener's address and how to stop serving.
// With no address configured it does nothing.
func startAdmission(ctx context.Context, cfg Config, kc *rest.Config, namespace string, st store.Store, mgr *resources.Manager, logger *slog.Logger) (net.Addr, func(), error) {
	wc := cfg.Webhook
	if wc.Address == "" {
		return nil, func() {}, nil
	}
	if wc.Service == "" {
		wc.Service = install.Name
	}
	files := webhookServerFiles()
	operatorCert := wc.TLSCert != "" || wc.TLSKey != ""
	if !operatorCert {
		if err := shareServerCA(ctx, st, files, cfg.DataDir, logger); err != nil {
			return nil, nil, fmt.Errorf("webhook TLS: %w", err)
		}
	}
	svc := wc.Service + "." + namespace + ".svc"
	hosts := []string{svc, svc + ".cluster.local", wc.Service + "." + namespace, wc.Service}
	if host, _, err := net.SplitHostPort(wc.Address); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		hosts = append(hosts, host)
	}
	if wc.URL != "" {
		u, err := url.Parse(wc.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, nil, fmt.Errorf("--webhook-url %q: must be https://HOST[:PORT]", wc.URL)
		}
		hosts = append(hosts, u.Hostname())
	}
	tlsConf, caPEM, err := sds.LoadOrCreateTLS(files, cfg.DataDir, wc.TLSCert, wc.TLSKey, hosts, time.Now)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook TLS: %w", err)
	}
	if !operatorCert {
		// A pod may run longer than the certificate's year.
		tlsConf = renewingTLS(tlsConf, func(now func() time.Time) (*tls.Config, error) {
			c, _, err := sds.LoadOrCreateTLS(files, cfg.DataDir, "", "", hosts, now)
			return c, err
		}, time.Now, logger)
	}
	dyn, err := dynamic.NewForConfig(kc)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: %w", err)
	}
	opts := admission.Options{SystemNamespace: namespace, MeshExists: admission.LiveMeshExists(dyn), RecheckFor: webhookRecheckFor, Logger: logger}
	// The control plane's own writes were validated by its manager; a
	// ServiceAccount is its own, while a kubeconfig's user (out of
	// cluster) is likely a person's, whose kubectl must stay checked.
	if who, err := admission.WhoAmI(ctx, dyn); err != nil {
		logger.Warn("webhook: could not learn this control plane's Kubernetes user; its own writes are validated too", "error", err)
	} else if strings.HasPrefix(who, "system:serviceaccount:") {
		opts.ExemptUser = who
	}
	lis, err := net.Listen("tcp", wc.Address)
	if err != nil {
		return nil, nil, fmt.Errorf("--webhook-address %q: %w", wc.Address, err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+admission.Path, admission.NewHandler(mgr, opts))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	go func() {
		if err := srv.Serve(tls.NewListener(lis, tlsConf)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("webhook server stopped", "error", err)
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}

	target := admission.Target{URL: wc.URL, ServiceNamespace: namespace, ServiceName: wc.Service, ServicePort: install.ServicePortHook}
	switch {
	case operatorCert:
		logger.Info("webhook serves the operator's certificate: its ValidatingWebhookConfiguration is the operator's to keep", "name", admission.ConfigurationName)
	default:
		err := admission.Register(ctx, dyn, admission.Configuration(namespace, target, caPEM))
		switch {
		case apierrors.IsForbidden(err):
			// Fail closed stays: the API server cannot verify this
			// webhook, so kuma.io writes are refused until it can.
			logger.Warn("webhook: not allowed to update its ValidatingWebhookConfiguration; set its caBundle to this control plane's CA",
				"name", admission.ConfigurationName, "caFile", files.CA, "error", err)
		case err != nil:
			stop()
			return nil, nil, fmt.Errorf("webhook: %w", err)
		}
	}
	logger.Info("admission webhook serving", "address", lis.Addr().String(), "url", wc.URL, "service", svc, "exemptUser", opts.ExemptUser)
	return lis.Addr(), stop, nil
}

// renewingTLS serves conf's certificate until it is within sds.RenewBefore
// of expiring, then the one load issues again from the same CA (which
// still verifies against the registered caBundle), checked at most once a
// minute.
func renewingTLS(conf *tls.Config, load func(now func() time.Time) (*tls.Config, error), now func() time.Time, logger *slog.Logger) *tls.Config {
	r := &certRenewer{cert: &conf.Certificates[0], load: load, now: now, logger: logger}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
}

type certRenewer struct {
	load   func(now func() time.Time) (*tls.Config, error)
	now    func() time.Time
	logger *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	lastCheck time.Time
}

func (r *certRenewer) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Add(sds.RenewBefore).Before(r.cert.Leaf.NotAfter) || now.Sub(r.lastCheck) < time.Minute {
		return r.cert, nil
	}
	r.lastCheck = now
	conf, err := r.load(r.now)
	if err != nil {
		// Keep serving the current one while it lasts; say why.
		r.logger.Error("webhook: could not renew the server certificate", "notAfter", r.cert.Leaf.NotAfter, "error", err)
		return r.cert, nil
	}
	r.cert = &conf.Certificates[0]
	r.logger.Info("webhook: server certificate renewed", "notAfter", r.cert.Leaf.NotAfter)
	return r.cert, nil
}
