// Command meshctl manages a meshca control plane through its HTTP API.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"meshca/pkg/meshctl"
)

// version is set at build time: -ldflags "-X main.version=1.0.0".
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := meshctl.Main(ctx, meshctl.Config{Version: version}, os.Args[1:])
	stop()
	os.Exit(code)
}
