package main

import (
	"context"
	"os"
	"path/filepath"

	"meshca/bench/internal/benchproc"
)

// saveProfiles fetches meshca-cp's heap profile (after a forced GC, so it
// shows live memory) and goroutine profile into --profile-dir, named after
// the phase that just ended. The phase's own timing includes none of this:
// it is called after the phase's numbers are taken.
func (r *runner) saveProfiles(phase string) error {
	if err := os.MkdirAll(r.cfg.profileDir, 0o755); err != nil {
		return err
	}
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", phase + ".heap.pb.gz"},
		{"/debug/pprof/goroutine", phase + ".goroutine.pb.gz"},
	} {
		if err := benchproc.SaveURL(context.Background(), r.hc, r.cp.apiURL+p.path, filepath.Join(r.cfg.profileDir, p.file)); err != nil {
			return err
		}
	}
	return nil
}
