package meshctl

import (
	"github.com/spf13/cobra"

	"meshca/pkg/kube/crd"
)

// newInstallCmd is `meshctl install`: manifests for running meshca on
// Kubernetes, printed for `kubectl apply -f -` as kumactl install does.
func newInstallCmd(_ *App) *cobra.Command {
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
	return cmd
}
