// Command cert-manager-controllers runs four of cert-manager's own
// controllers against a Kubernetes API server: "issuers" and "clusterissuers"
// (make a CA Issuer or ClusterIssuer Ready from its Secret), the CA
// CertificateRequest signer and the built-in approver, the ones a cert-manager
// installation uses to sign a CertificateRequest for an issuer of type CA. It
// stands in for cert-manager's controller binary in tests; it stops on SIGTERM
// or SIGINT.
//
// --controllers selects them as cert-manager's own flag does: a
// comma-separated list where "*" is all of them and "-name" removes one, e.g.
// "*,-certificaterequests-approver" for a cluster whose requests a policy
// approver (approver-policy) approves or denies instead of the built-in one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca" // registers the CA issuer type
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file of the API server")
	clusterNS := flag.String("cluster-resource-namespace", "cert-manager", "namespace of the Secrets of ClusterIssuers")
	selection := flag.String("controllers", "*", "controllers to run, comma-separated: \"*\" for all of "+strings.Join(all, ", ")+", \"-name\" to leave one out")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "cert-manager-controllers: --kubeconfig is required")
		os.Exit(2)
	}
	names, err := selectControllers(*selection)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controllers: --controllers:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *clusterNS, names); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controllers:", err)
		os.Exit(1)
	}
}

// all is every controller this command can run, in start order.
var all = []string{issuers.ControllerName, clusterissuers.ControllerName, crca.CRControllerName, approver.ControllerName}

// selectControllers interprets --controllers: names, "*" for all, "-name" to
// remove one.
func selectControllers(selection string) ([]string, error) {
	on := map[string]bool{}
	for _, item := range strings.Split(selection, ",") {
		item = strings.TrimSpace(item)
		name, off := strings.CutPrefix(item, "-")
		switch {
		case item == "":
		case item == "*":
			for _, n := range all {
				on[n] = true
			}
		case !slices.Contains(all, name):
			return nil, fmt.Errorf("unknown controller %q (known: %s)", name, strings.Join(all, ", "))
		default:
			on[name] = !off
		}
	}
	var names []string
	for _, n := range all {
		if on[n] {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%q selects no controller", selection)
	}
	return names, nil
}

func run(ctx context.Context, kubeconfig, clusterNS string, names []string) error {
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   100,
		KubernetesAPIBurst: 200,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: clusterNS},
	})
	if err != nil {
		return fmt.Errorf("controller context: %w", err)
	}
	var ctrls []controllerpkg.Interface
	for _, name := range names {
		construct, ok := controllerpkg.Known()[name]
		if !ok {
			return fmt.Errorf("controller %s is not registered", name)
		}
		c, err := construct(factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		ctrls = append(ctrls, c)
	}
	// The controllers registered their informers while being built; start
	// them now, as cert-manager's controller does.
	base, err := factory.Build("cert-manager-controllers")
	if err != nil {
		return err
	}
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.SharedInformerFactory.Start(ctx.Done())
	fmt.Fprintln(os.Stderr, "cert-manager-controllers: running", strings.Join(names, ", "))

	var wg sync.WaitGroup
	errs := make([]error, len(ctrls))
	for i, c := range ctrls {
		wg.Go(func() { errs[i] = c.Run(2, ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
