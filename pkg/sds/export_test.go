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

// WithoutPoller makes the servers the test starts wait for each
// connection on its own goroutine, as off Linux.
func WithoutPoller(t *testing.T) {
	usePoller = false
	t.Cleanup(func() { usePoller = true })
}

// SetFirstRequestTimeout sets how long a NodeAuthenticator's stream may
// wait for its first request, for the test.
func SetFirstRequestTimeout(t *testing.T, d time.Duration) {
	old := firstRequestTimeout
	firstRequestTimeout = d
	t.Cleanup(func() { firstRequestTimeout = old })
}
