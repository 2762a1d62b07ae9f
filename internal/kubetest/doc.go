// Package kubetest starts a real Kubernetes API server (etcd and
// kube-apiserver, the binaries scripts/build-kube.sh builds from the pinned
// tools/kube module) for tests, on loopback ports chosen at run time, and
// hands back a rest.Config with cluster-admin rights over verified TLS.
//
// The binaries are found in the directory KUBEBUILDER_ASSETS names (the
// variable controller-runtime's envtest uses, so one build serves both);
// tests skip with a clear message when it is unset. Nothing is shared
// between tests: each Start gets its own etcd data directory and
// certificates, and both processes are stopped by t.Cleanup.
package kubetest
