// Command cert-manager-controllers runs three of cert-manager's own
// controllers against a Kubernetes API server: "issuers" (makes a CA Issuer
// Ready from its Secret), the CA CertificateRequest signer and the built-in
// approver, the ones a cert-manager installation uses to sign a
// CertificateRequest for an Issuer of kind CA. It stands in for cert-manager's
// controller binary in tests; it stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca" // registers the CA issuer type
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file of the API server")
	clusterNS := flag.String("cluster-resource-namespace", "cert-manager", "namespace of the Secrets of ClusterIssuers")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "cert-manager-controllers: --kubeconfig is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *clusterNS); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controllers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, clusterNS string) error {
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
	for _, name := range []string{issuers.ControllerName, crca.CRControllerName, approver.ControllerName} {
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
	fmt.Fprintln(os.Stderr, "cert-manager-controllers: running issuers, certificaterequests-issuer-ca, certificaterequests-approver")

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
