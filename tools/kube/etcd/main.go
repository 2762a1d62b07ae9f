// Command etcd is etcd's own server entry point, built from the version this
// module pins (go.etcd.io/etcd/server/v3 v3.7.0, the one Kubernetes v1.37.2
// is tested with) rather than the newest, which would upgrade grpc under
// kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
