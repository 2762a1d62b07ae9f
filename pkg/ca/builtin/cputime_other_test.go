//go:build !unix

package builtin_test

import "time"

func processCPUTime() (time.Duration, bool) { return 0, false }
