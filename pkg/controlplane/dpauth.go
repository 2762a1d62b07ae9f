package controlplane

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"meshca/pkg/kube/tokenreview"
	"meshca/pkg/sds"
	"meshca/pkg/tokens"
)

// dataplaneAuthenticator is how the SDS server authenticates data planes:
// by dataplane token; on Kubernetes also by the pod's ServiceAccount token
// (TokenReview, for a Dataplane of the token's namespace), as Kuma does
// there. Dataplane tokens stay accepted on Kubernetes: only an admin of
// meshca's API can generate them, and they let a data plane outside the
// cluster (a VM) join.
func dataplaneAuthenticator(cfg Config, toks *tokens.Tokens, reg prometheus.Registerer) (sds.Authenticator, error) {
	byToken := sds.TokenAuthenticator{Tokens: toks, UnknownKeyIsTransient: cfg.mode() == ModeZone}
	if !cfg.kubernetes() {
		return byToken, nil
	}
	client, err := kubeClientset(cfg)
	if err != nil {
		return nil, err
	}
	a := tokenreview.New(client, tokenreview.Options{DataplaneTokens: byToken})
	reg.MustRegister(a.Collectors()...)
	return a, nil
}

// kubeClientset is a typed client of the Kubernetes API of --kubeconfig
// (in-cluster without one).
func kubeClientset(cfg Config) (kubernetes.Interface, error) {
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}
