package controlplane

// --environment kubernetes: the store is the Kubernetes API (pkg/store/kube),
// meshca's CRDs are registered at start when RBAC allows, the HTTP API is
// read-only for what users manage with kubectl, and secrets at rest are the
// platform's: Kubernetes Secrets (encrypted by the API server's own
// encryption at rest when the cluster enables it). meshca's own
// encryption is added only when --encryption-key-file is given, and then
// only for its own records (data-plane private keys): the kuma.io
// resources and Kuma's Secrets stay readable to kubectl, as Kuma's are.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"meshca/pkg/api"
	"meshca/pkg/identity"
	"meshca/pkg/kube/crd"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/kube"
)

// Environments of `meshca-cp run --environment`.
const (
	EnvironmentUniversal  = "universal"
	EnvironmentKubernetes = "kubernetes"
)

// Defaults of the Kubernetes client: the store writes one object per
// record, and client-go's own defaults (5/s, burst 10) would make a
// control plane of thousands of data planes wait on itself: issuing
// 10,000 identities took 29 s at 500/s and 22 s at 2,000/s (BENCHMARKS.md
// §15). The API server's priority and fairness still protects it from
// this client.
const (
	DefaultKubeAPIQPS   = 1000
	DefaultKubeAPIBurst = 2000
)

func (cfg Config) environment() string {
	if cfg.Environment == "" {
		return EnvironmentUniversal
	}
	return cfg.Environment
}

func (cfg Config) kubernetes() bool { return cfg.environment() == EnvironmentKubernetes }

// checkEnvironment refuses flags that do not go with the environment,
// before anything is created.
func (cfg Config) checkEnvironment() error {
	switch cfg.environment() {
	case EnvironmentUniversal:
		if cfg.SystemNamespace != "" && cfg.SystemNamespace != kube.DefaultNamespace {
			return errors.New("--system-namespace is for --environment kubernetes")
		}
	case EnvironmentKubernetes:
		if cfg.Store != "" {
			return fmt.Errorf("--store %q: not with --environment kubernetes, whose store is the Kubernetes API", cfg.Store)
		}
		if cfg.StoreDSN != "" {
			return errors.New("--store-dsn: not with --environment kubernetes, whose store is the Kubernetes API")
		}
	default:
		return fmt.Errorf("--environment %q: must be universal or kubernetes", cfg.Environment)
	}
	return nil
}

func (cfg Config) systemNamespace() string {
	if cfg.SystemNamespace == "" {
		return kube.DefaultNamespace
	}
	return cfg.SystemNamespace
}

// kubeRESTConfig is the client configuration of --kubeconfig, or the
// pod's own (in-cluster) when none is given.
func kubeRESTConfig(cfg Config) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		if rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig %q: %w", cfg.Kubeconfig, err)
		}
	} else if rc, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("--environment kubernetes: no --kubeconfig (or KUBECONFIG) given and not running in a pod: %w", err)
	}
	rc.QPS, rc.Burst = float32(DefaultKubeAPIQPS), DefaultKubeAPIBurst
	if cfg.KubeAPIQPS > 0 {
		rc.QPS = float32(cfg.KubeAPIQPS)
	}
	if cfg.KubeAPIBurst > 0 {
		rc.Burst = cfg.KubeAPIBurst
	}
	rc.UserAgent = "meshca-cp/" + cfg.Version
	return rc, nil
}

// openKubernetesStore registers meshca's CRDs (if allowed) and opens the
// store on the Kubernetes API.
func openKubernetesStore(ctx context.Context, cfg Config, logger *slog.Logger) (store.Store, error) {
	// client-go's informers and throttling report through klog: into our
	// log, without its verbose levels (klog's V(n) is slog level -n).
	klog.SetSlogLogger(slog.New(minLevel{logger.Handler(), slog.LevelInfo}).With("component", "client-go"))
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := ensureCRDs(ctx, rc, logger); err != nil {
		return nil, err
	}
	st, err := kube.Open(ctx, rc, kube.Options{Namespace: cfg.systemNamespace(), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("kubernetes store (namespace %s, API server %s): %w", cfg.systemNamespace(), rc.Host, err)
	}
	return st, nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ensureCRDs applies meshca's CustomResourceDefinitions (server-side, as
// meshca-cp) and waits until they are served. Without the right to, it
// checks that they are installed, and says how to install them if not.
func ensureCRDs(ctx context.Context, rc *rest.Config, logger *slog.Logger) error {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	for _, r := range crd.Resources() {
		obj := &unstructured.Unstructured{Object: r.Definition()}
		_, err := dyn.Resource(crdGVR).Apply(ctx, r.Name(), obj, metav1.ApplyOptions{FieldManager: kube.DefaultFieldManager, Force: true})
		if err == nil {
			continue
		}
		if !apierrors.IsForbidden(err) {
			return fmt.Errorf("register CustomResourceDefinition %s: %w", r.Name(), err)
		}
		_, gerr := dyn.Resource(crdGVR).Get(ctx, r.Name(), metav1.GetOptions{})
		switch {
		case gerr == nil:
			logger.Info("CustomResourceDefinition installed; not allowed to update it, so left as it is", "crd", r.Name())
		case apierrors.IsNotFound(gerr):
			return fmt.Errorf("CustomResourceDefinition %s is not installed and meshca-cp may not create it: run `meshctl install crds | kubectl apply -f -` as a cluster admin", r.Name())
		case apierrors.IsForbidden(gerr):
			// Whether they are served is checked by the store when it lists them.
			logger.Info("not allowed to register or read CustomResourceDefinitions (as installed by meshctl install control-plane): the store checks that meshca's are served")
			return nil
		default:
			return fmt.Errorf("read CustomResourceDefinition %s: %w", r.Name(), gerr)
		}
	}
	return waitCRDsEstablished(ctx, dyn)
}

func waitCRDsEstablished(ctx context.Context, dyn dynamic.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, r := range crd.Resources() {
		for {
			obj, err := dyn.Resource(crdGVR).Get(ctx, r.Name(), metav1.GetOptions{})
			if apierrors.IsForbidden(err) {
				return nil
			}
			if err == nil && established(obj) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CustomResourceDefinition %s not Established: %w", r.Name(), ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func established(obj *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// minLevel passes on records of level min and above.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }

// kubernetesReadOnly adds to guard what Kuma's API refuses on Kubernetes:
// writes of the resources users manage with kubectl.
func kubernetesReadOnly(cfg Config, guard func(context.Context, store.Key) error) func(context.Context, store.Key) error {
	if !cfg.kubernetes() {
		return guard
	}
	ns := cfg.systemNamespace()
	return func(ctx context.Context, key store.Key) error {
		switch key.Type {
		case api.TypeMesh, api.TypeDataplane, api.TypeAccessRole, api.TypeAccessRoleBinding:
			return fmt.Errorf("%w: %s: on Kubernetes the kuma.io resources are managed with kubectl (kubectl apply -f FILE with apiVersion kuma.io/v1alpha1); this API only reads them", resources.ErrReadOnly, key)
		case api.TypeSecret, api.TypeGlobalSecret:
			return fmt.Errorf("%w: %s: on Kubernetes, Secrets are managed with kubectl, in namespace %s (type system.kuma.io/secret with label kuma.io/mesh, or system.kuma.io/global-secret); this API only reads them", resources.ErrReadOnly, key, ns)
		}
		if guard != nil {
			return guard(ctx, key)
		}
		return nil
	}
}

// kubernetesSealedTypes are the records meshca encrypts itself on
// Kubernetes, with --encryption-key-file: its own, not what kubectl reads.
func kubernetesSealedTypes() []string { return []string{identity.TypeDataplaneIdentity} }

// startKubernetes starts what only a control plane on Kubernetes runs: the
// admission webhook.
func startKubernetes(ctx context.Context, cfg Config, st store.Store, mgr *resources.Manager, logger *slog.Logger) (stop func(), err error) {
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	_, stop, err = startAdmission(ctx, cfg, rc, cfg.systemNamespace(), st, mgr, logger)
	return stop, err
}
