// Command kubeload measures meshca-cp with its store in the Kubernetes API
// against the same control plane on SQLite, in one run.
//
//	KUBEBUILDER_ASSETS=DIR go run ./bench/kubeload -n 10000
//
// It builds the real meshca-cp, then (1) starts it on SQLite (universal),
// creates a Mesh with the builtin CA and -n Dataplanes through its HTTP API
// (-concurrency at a time) and times them from the first creation until the
// control plane reports all certified (meshca_dataplanes_by_cert_state
// {state="valid"}); (2) starts etcd and kube-apiserver (internal/kubetest,
// binaries from scripts/build-kube.sh in KUBEBUILDER_ASSETS), installs
// meshca's CRDs, starts meshca-cp --environment kubernetes against it, and
// does the same with the Mesh and Dataplanes created as kuma.io/v1alpha1
// custom resources through the Kubernetes API (Dataplanes spread over
// -namespaces namespaces, as Kuma puts them in their pods' namespaces). It
// reports both times, the control plane's peak RSS (VmHWM) in each run, and
// kube-apiserver's and etcd's peak and current RSS.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"meshca/bench/internal/benchproc"
	"meshca/internal/kubetest"
	"meshca/pkg/api"
	"meshca/pkg/kube/crd"
	"meshca/pkg/meshctl"
)

type config struct {
	n, concurrency, namespaces int
	assets, systemNS           string
	sqlite                     bool
	cpArgs                     string
	timeout                    time.Duration
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 10000, "Dataplanes to create")
	flag.IntVar(&c.concurrency, "concurrency", 32, "concurrent creations")
	flag.IntVar(&c.namespaces, "namespaces", 10, "namespaces the Kubernetes Dataplanes are spread over")
	flag.StringVar(&c.assets, "assets", os.Getenv(kubetest.EnvAssets), "directory of etcd and kube-apiserver (scripts/build-kube.sh DIR)")
	flag.StringVar(&c.systemNS, "system-namespace", "meshca-system", "meshca-cp --system-namespace")
	flag.BoolVar(&c.sqlite, "sqlite", true, "also run on SQLite, for comparison")
	flag.StringVar(&c.cpArgs, "cp-args", "", "more meshca-cp run flags for the Kubernetes run, separated by spaces (e.g. --generate-dataplanes=false)")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Minute, "bound on the whole run")
	flag.Parse()
	if c.assets == "" {
		fmt.Fprintf(os.Stderr, "kubeload: -assets (or %s) is required: build the binaries with scripts/build-kube.sh DIR\n", kubetest.EnvAssets)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if _, err := run(ctx, c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kubeload:", err)
		os.Exit(1)
	}
}

// Result is what one run measured.
type Result struct {
	Store string
	// Created is how long the creations took; Certified the time from the
	// first creation until all were certified.
	Created, Certified time.Duration
	// CPPeakRSS is the control plane's VmHWM; APIServer and Etcd are
	// "peak / current" RSS (Kubernetes run only).
	CPPeakRSS, APIServer, Etcd string
}

// run does both runs (the SQLite one if c.sqlite) and returns their results.
func run(ctx context.Context, c config, out io.Writer) (results []Result, err error) {
	dir, err := os.MkdirTemp("", "kubeload-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "kubeload: logs kept in %s\n", dir)
		}
	}()
	bin, err := benchproc.Build(dir, "meshca-cp")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "kubeload: n=%d, concurrency %d\n", c.n, c.concurrency)
	if c.sqlite {
		r, err := runSQLite(ctx, c, bin, dir)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		report(out, c, r)
		results = append(results, r)
	}
	r, err := runKubernetes(ctx, c, bin, dir)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	report(out, c, r)
	return append(results, r), nil
}

func report(out io.Writer, c config, r Result) {
	fmt.Fprintf(out, "%-10s %d Dataplanes created in %v, all certified %v after the first; meshca-cp peak RSS %s",
		r.Store+":", c.n, r.Created.Round(time.Millisecond), r.Certified.Round(time.Millisecond), r.CPPeakRSS)
	if r.APIServer != "" {
		fmt.Fprintf(out, "; kube-apiserver RSS peak/now %s, etcd %s", r.APIServer, r.Etcd)
	}
	fmt.Fprintln(out)
}

const validMetric = `meshca_dataplanes_by_cert_state{state="valid"}`

func builtinMesh() *api.MeshSpec {
	return &api.MeshSpec{MTLS: &api.MTLS{
		EnabledBackend: "ca-1",
		Backends: []api.MTLSBackend{{Name: "ca-1", Type: "builtin",
			DpCert: &api.DpCert{Rotation: &api.Rotation{Expiration: "1h"}, KeyType: api.KeyTypeECDSAP256}}},
	}}
}

func service(i int) string { return fmt.Sprintf("svc-%03d", i%100) }

func runSQLite(ctx context.Context, c config, bin, dir string) (Result, error) {
	cp, err := benchproc.StartCP(ctx, bin, dir, "sqlite", nil, "--store", "sqlite")
	if err != nil {
		return Result{}, err
	}
	defer cp.Stop()
	client, err := meshctl.NewClient("http://"+cp.API, &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return Result{}, err
	}
	mesh := &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}, MeshSpec: *builtinMesh()}
	if _, err := client.Apply(ctx, mesh, false); err != nil {
		return Result{}, fmt.Errorf("apply mesh: %w", err)
	}
	r := Result{Store: "SQLite"}
	t0 := time.Now()
	err = parallel(ctx, c, func(ctx context.Context, i int) error {
		dp := &api.Dataplane{
			Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: fmt.Sprintf("dp-%05d", i)},
			DataplaneSpec: api.DataplaneSpec{Networking: api.Networking{
				Address: "127.0.0.1",
				Inbound: []api.Inbound{{Port: 20000 + uint32(i%40000), ServicePort: 8080, Tags: map[string]string{api.ServiceTag: service(i)}}},
			}},
		}
		_, err := client.Apply(ctx, dp, false)
		return err
	})
	if err := r.timeCertification(ctx, cp, c.n, t0, err); err != nil {
		return r, err
	}
	return r, nil
}

var (
	meshes     = schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"}
	dataplanes = schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "dataplanes"}
)

func runKubernetes(ctx context.Context, c config, bin, dir string) (Result, error) {
	kdir := filepath.Join(dir, "kube")
	if err := os.Mkdir(kdir, 0o700); err != nil {
		return Result{}, err
	}
	srv, err := kubetest.Launch(c.assets, kdir)
	if srv != nil {
		defer srv.Stop()
	}
	if err != nil {
		return Result{}, err
	}
	manifest, err := crd.Manifest()
	if err != nil {
		return Result{}, err
	}
	if err := kubetest.Apply(ctx, srv.Config, manifest); err != nil {
		return Result{}, fmt.Errorf("install CRDs: %w", err)
	}
	if err := kubetest.CreateNamespace(ctx, srv.Config, c.systemNS); err != nil {
		return Result{}, err
	}
	for i := range c.namespaces {
		if err := kubetest.CreateNamespace(ctx, srv.Config, namespace(i)); err != nil {
			return Result{}, err
		}
	}
	// With its admission webhook, as installed: every Dataplane created is
	// reviewed by the control plane (outside the cluster: --webhook-url).
	hook := benchproc.FreeAddr()
	args := []string{"--environment", "kubernetes", "--kubeconfig", srv.Kubeconfig, "--system-namespace", c.systemNS,
		"--webhook-address", hook, "--webhook-url", "https://" + hook}
	cp, err := benchproc.StartCP(ctx, bin, dir, "kubernetes", nil, append(args, strings.Fields(c.cpArgs)...)...)
	if err != nil {
		return Result{}, err
	}
	defer cp.Stop()

	cfg := rest.CopyConfig(srv.Config)
	// The client-side limit is not what is measured: let the API server's
	// own limits (max-requests-inflight) be the bound.
	cfg.QPS, cfg.Burst = 5000, 5000
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Result{}, err
	}
	spec, err := toMap(builtinMesh())
	if err != nil {
		return Result{}, err
	}
	mesh := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.Group + "/" + crd.Version, "kind": "Mesh",
		"metadata": map[string]any{"name": "default"},
		"spec":     spec,
	}}
	if _, err := dyn.Resource(meshes).Create(ctx, mesh, metav1.CreateOptions{}); err != nil {
		return Result{}, fmt.Errorf("create Mesh: %w", err)
	}
	r := Result{Store: "Kubernetes"}
	t0 := time.Now()
	err = parallel(ctx, c, func(ctx context.Context, i int) error {
		ns := namespace(i % c.namespaces)
		dp := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": crd.Group + "/" + crd.Version, "kind": "Dataplane",
			"metadata": map[string]any{"name": fmt.Sprintf("dp-%05d", i), "namespace": ns},
			"mesh":     "default",
			"spec": map[string]any{"networking": map[string]any{
				"address": "127.0.0.1",
				"inbound": []any{map[string]any{"port": int64(20000 + i%40000), "servicePort": int64(8080),
					"tags": map[string]any{api.ServiceTag: service(i)}}},
			}},
		}}
		_, err := dyn.Resource(dataplanes).Namespace(ns).Create(ctx, dp, metav1.CreateOptions{})
		return err
	})
	if err := r.timeCertification(ctx, cp, c.n, t0, err); err != nil {
		return r, err
	}
	r.APIServer = benchproc.MiB(benchproc.Status(srv.APIServerPID, "VmHWM")) + " / " + benchproc.MiB(benchproc.Status(srv.APIServerPID, "VmRSS"))
	r.Etcd = benchproc.MiB(benchproc.Status(srv.EtcdPID, "VmHWM")) + " / " + benchproc.MiB(benchproc.Status(srv.EtcdPID, "VmRSS"))
	return r, nil
}

func namespace(i int) string { return fmt.Sprintf("kubeload-%02d", i) }

// parallel runs create(i) for i in [0, c.n), c.concurrency at a time.
func parallel(ctx context.Context, c config, create func(context.Context, int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.concurrency)
	var next atomic.Int64
	for range c.n {
		g.Go(func() error {
			i := int(next.Add(1) - 1)
			if err := create(gctx, i); err != nil {
				return fmt.Errorf("create dp-%05d: %w", i, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// timeCertification records, once the creation of n Dataplanes that began
// at t0 ended (with createErr), how long it took, how long until cp
// certified them all, and cp's peak RSS.
func (r *Result) timeCertification(ctx context.Context, cp *benchproc.CP, n int, t0 time.Time, createErr error) error {
	if createErr != nil {
		return createErr
	}
	r.Created = time.Since(t0)
	if err := waitCertified(ctx, cp, n); err != nil {
		return err
	}
	r.Certified = time.Since(t0)
	r.CPPeakRSS = benchproc.MiB(benchproc.Status(cp.PID(), "VmHWM"))
	return nil
}

// waitCertified waits until cp reports n Dataplanes with a valid certificate.
func waitCertified(ctx context.Context, cp *benchproc.CP, n int) error {
	var last float64
	for {
		v, err := cp.Metric(ctx, validMetric)
		if err == nil && v >= float64(n) {
			return nil
		}
		if err == nil {
			last = v
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d Dataplanes certified: %w", int(last), n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// toMap turns v into the generic map of its JSON form.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}
