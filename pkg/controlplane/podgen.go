package controlplane

// Dataplanes generated from Pods (--generate-dataplanes, on Kubernetes), as
// Kuma's control plane generates them: only the leader runs the generator,
// so replicas do not race each other's writes. A leader that loses its term
// stops it at once; its writes are not fenced by the term (they go to the
// API server, not through the store), which is harmless: every write is
// conditional on the resourceVersion read and makes the same Dataplane any
// leader would.

import (
	"context"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"meshca/pkg/kube/podgen"
	"meshca/pkg/leader"
)

// runDataplaneGeneration runs the Pod-to-Dataplane generator during every
// term this instance leads, until ctx ends.
func runDataplaneGeneration(ctx context.Context, cfg Config, el *leader.Elector, logger *slog.Logger) {
	logger = logger.With("component", "podgen")
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		logger.Error("Dataplanes will not be generated from Pods", "error", err)
		return
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		logger.Error("Dataplanes will not be generated from Pods", "error", err)
		return
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		logger.Error("Dataplanes will not be generated from Pods", "error", err)
		return
	}
	gen := podgen.New(client, dyn, podgen.Options{Logger: logger})
	whileLeading(ctx, el, func(ctx context.Context, _ *leader.Term) {
		if err := gen.Run(ctx); err != nil && ctx.Err() == nil {
			logger.Error("generating Dataplanes from Pods stopped until the next term", "error", err)
		}
	})
}
