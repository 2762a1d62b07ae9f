package sds

import (
	"testing"
	"time"
)

// SetSendStallTimeout sets how long a push waits for flow-control credit,
// for the test.
func SetSendStallTimeout(t *testing.T, d time.Duration) {
	old := sendStallTimeout
	sendStallTimeout = d
	t.Cleanup(func() { sendStallTimeout = old })
}
