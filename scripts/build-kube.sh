#!/usr/bin/env bash
# build-kube.sh DIR: builds kube-apiserver, etcd and kubectl from the pinned
# tool module tools/kube, and cert-manager-controllers (cert-manager's own
# Issuer, ClusterIssuer, CA signer and approver controllers) from tools/certmanager, into
# DIR, and copies cert-manager's CRDs (from its module, at the version pinned
# below) into DIR/crds/cert-manager, for the Kubernetes tests
# (KUBEBUILDER_ASSETS=DIR). Binaries already in DIR that were built from the
# same tools/kube/go.sum are kept, so a CI cache makes a second run free.
# Heavy (minutes on 2 cores the first time): runs under nice.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
root=$(cd "$(dirname "$0")/.." && pwd)
mod=$root/tools/kube
cmmod=$root/tools/certmanager
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# cert-manager's version is the one tools/certmanager requires (v1.20.x:
# v1.21 depends on a Venafi/vcert version the module proxy does not serve).
cert_manager_version=$(cd "$cmmod" && go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
cm_dir=$(cd "$cmmod" && go mod download -json "github.com/cert-manager/cert-manager@$cert_manager_version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$cm_dir" ] || ! ls "$cm_dir"/deploy/crds/cert-manager.io_*.yaml >/dev/null 2>&1; then
  echo "build-kube: cert-manager $cert_manager_version CRDs not found in its module" >&2
  exit 1
fi
# Copied only when they differ from what DIR holds: a test of another run
# may be reading them.
crds="$dir/crds/cert-manager"
same=1
for f in "$cm_dir"/deploy/crds/*.yaml; do
  cmp -s "$f" "$crds/$(basename "$f")" || same=0
done
[ "$(ls "$crds" 2>/dev/null | wc -l)" = "$(ls "$cm_dir"/deploy/crds/*.yaml | wc -l)" ] || same=0
if [ "$same" = 0 ]; then
  rm -rf "$crds"
  mkdir -p "$crds"
  cp "$cm_dir"/deploy/crds/*.yaml "$crds/"
  chmod -R u+w "$dir/crds"
fi

# The stamp names the exact pins; a changed go.mod/go.sum rebuilds everything.
stamp=$(cd "$root" && cat tools/kube/go.mod tools/kube/go.sum tools/kube/etcd/main.go \
  tools/certmanager/go.mod tools/certmanager/go.sum tools/certmanager/cmd/cert-manager-controllers/main.go | sha256sum | cut -d' ' -f1)
if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] &&
   [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] && [ -x "$dir/kubectl" ] && [ -x "$dir/cert-manager-controllers" ]; then
  echo "build-kube: $dir is up to date"
  exit 0
fi
rm -f "$dir/.stamp"

# The version kube-apiserver reports (and that clients and envtest check)
# comes from -X, since a module build has no git tree to read it from.
kver=$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kver -X k8s.io/client-go/pkg/version.gitVersion=$kver"

export CGO_ENABLED=0 GOFLAGS=-mod=readonly
echo "build-kube: building kube-apiserver, etcd and kubectl $kver and cert-manager-controllers $cert_manager_version into $dir"
# kube-apiserver, etcd and kubectl in one go build, which compiles the
# packages they share once and keeps both cores busy; cert-manager's module
# pins other Kubernetes libraries (nothing to share), so it builds alongside,
# filling the cores while the first build links. The -X flags name symbols
# etcd does not have, which the linker ignores. No DWARF is generated: -s -w
# would strip it at link anyway.
(cd "$mod" && nice -n 15 go build -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" -o "$dir/" \
  k8s.io/kubernetes/cmd/kube-apiserver ./etcd k8s.io/kubernetes/cmd/kubectl) &
kube_build=$!
cm_status=0
(cd "$cmmod" && nice -n 15 go build -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w" -o "$dir/cert-manager-controllers" ./cmd/cert-manager-controllers) || cm_status=$?
kube_status=0
wait "$kube_build" || kube_status=$?
if [ "$kube_status" -ne 0 ] || [ "$cm_status" -ne 0 ]; then
  echo "build-kube: build failed (kube-apiserver/etcd/kubectl: exit $kube_status, cert-manager-controllers: exit $cm_status)" >&2
  exit 1
fi
"$dir/kube-apiserver" --version
# sed reads all of etcd's output: head would exit after the first line and
# etcd, writing the next, die of SIGPIPE, which pipefail makes a failure.
"$dir/etcd" --version | sed -n 1p
echo "$stamp" > "$dir/.stamp"
