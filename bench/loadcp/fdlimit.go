package main

import (
	"fmt"
	"syscall"
)

// spareFiles is what the load tool and meshca-cp each need beyond one
// descriptor per SDS connection (HTTP clients, listeners, SQLite, logs).
const spareFiles = 256

// checkFileLimit refuses a run whose SDS connections cannot all be open at
// once: both this process and meshca-cp (which inherits the limit) hold
// one descriptor per connection. Go raises the soft limit to the hard one
// at start, so the hard limit is what counts.
func checkFileLimit(c *config) error {
	conns := (c.sdsClients + c.perConn - 1) / c.perConn
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return nil // unknown: let the run say
	}
	if need := uint64(conns + spareFiles); r.Cur < need {
		return fmt.Errorf("%d SDS connections need %d file descriptors in this process and in meshca-cp, the limit is %d (hard %d): raise it (ulimit -n %d) or lower -n / --sds-clients, or raise --streams-per-conn",
			conns, need, r.Cur, r.Max, need)
	}
	return nil
}
