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
	"fmt"
	"log/slog"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if err := mayWatchPods(ctx, client); err != nil {
		// An installation from before generation existed: say so once
		// instead of client-go's endless "forbidden" from the informers.
		logger.Warn("Dataplanes will not be generated from Pods: " + err.Error() +
			"; apply the output of `meshctl install control-plane` again, or run with --generate-dataplanes=false")
		return
	}
	gen := podgen.New(client, dyn, podgen.Options{Logger: logger})
	whileLeading(ctx, el, func(ctx context.Context, _ *leader.Term) {
		if err := gen.Run(ctx); err != nil && ctx.Err() == nil {
			logger.Error("generating Dataplanes from Pods stopped until the next term", "error", err)
		}
	})
}

// mayWatchPods checks, with SelfSubjectAccessReviews, that the control
// plane may list and watch what the generator's informers follow.
func mayWatchPods(ctx context.Context, client kubernetes.Interface) error {
	for _, resource := range []string{"pods", "services", "namespaces"} {
		for _, verb := range []string{"list", "watch"} {
			review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource}},
			}, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("cannot check whether it may %s %s: %w", verb, resource, err)
			}
			if !review.Status.Allowed {
				return fmt.Errorf("the control plane may not %s %s in all namespaces", verb, resource)
			}
		}
	}
	return nil
}
