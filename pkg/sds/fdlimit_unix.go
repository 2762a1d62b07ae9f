//go:build unix

package sds

import "syscall"

// fileLimit returns the process's RLIMIT_NOFILE (soft, hard).
func fileLimit() (soft, hard uint64, ok bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, false
	}
	return uint64(r.Cur), uint64(r.Max), true
}
