package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"meshca/internal/kubetest"
)

// TestSmallRun runs the tool at a small size (the 10,000 run is recorded in
// BENCHMARKS.md, not run in CI): both stores certify every Dataplane and the
// report names the memory of each process.
func TestSmallRun(t *testing.T) {
	assets := kubetest.Assets(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	results, err := run(ctx, config{n: 200, concurrency: 16, namespaces: 4, assets: assets, systemNS: "meshca-system", sqlite: true}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].Store != "SQLite" || results[1].Store != "Kubernetes" {
		t.Fatalf("results = %+v", results)
	}
	for _, r := range results {
		if r.Certified < r.Created || r.Created <= 0 || !strings.HasSuffix(r.CPPeakRSS, " MiB") {
			t.Errorf("%s: %+v", r.Store, r)
		}
	}
	if k := results[1]; !strings.Contains(k.APIServer, " MiB / ") || !strings.Contains(k.Etcd, " MiB / ") {
		t.Errorf("API server and etcd memory not read: %+v", k)
	}
}
