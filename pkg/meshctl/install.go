package meshctl

import (
	"github.com/spf13/cobra"

	"meshca/pkg/kube/crd"
	"meshca/pkg/kube/install"
)

// newInstallCmd is `meshctl install`: manifests for running meshca on
// Kubernetes, printed for `kubectl apply -f -` as kumactl install does.
func newInstallCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print Kubernetes manifests for meshca",
		Args:  noArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "crds",
		Short: "Print the CustomResourceDefinitions of the kuma.io/v1alpha1 resources meshca stores (Mesh, Dataplane, AccessRole, AccessRoleBinding)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := crd.Manifest()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	})
	cmd.AddCommand(newInstallControlPlaneCmd(app))
	return cmd
}

// newInstallControlPlaneCmd is `meshctl install control-plane`: everything a
// cluster needs to run meshca-cp (see pkg/kube/install).
func newInstallControlPlaneCmd(app *App) *cobra.Command {
	var o install.Options
	cmd := &cobra.Command{
		Use:   "control-plane",
		Short: "Print the manifests that run meshca-cp in a cluster, for kubectl apply -f -",
		Long: `Print the manifests that run meshca-cp in a Kubernetes cluster: the system
Namespace, the kuma.io CRDs, the control plane's ServiceAccount, ClusterRole
and Role (only the verbs it uses) with their bindings, its Deployment, the
Service of its API (5681, 5682), data-plane server (5678) and admission
webhook (443), and the ValidatingWebhookConfiguration whose caBundle the
control plane fills in when it starts. Apply them with:

  meshctl install control-plane | kubectl apply -f -`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Version = app.Version()
			b, err := install.Manifest(o)
			if err != nil {
				return usageError{err}
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().StringVar(&o.Namespace, "namespace", install.DefaultNamespace, "the system namespace: the control plane and meshca's Secrets live there")
	cmd.Flags().StringVar(&o.Image, "image", "", "the control plane's image (default "+install.DefaultImageRepository+":<meshctl version>)")
	cmd.Flags().Int32Var(&o.Replicas, "replicas", 1, "control-plane replicas (one leads, elected with a Lease)")
	return cmd
}
