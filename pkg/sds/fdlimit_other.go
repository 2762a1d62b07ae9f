//go:build !unix

package sds

// fileLimit is unknown off Unix.
func fileLimit() (soft, hard uint64, ok bool) { return 0, 0, false }
