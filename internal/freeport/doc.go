// Package freeport hands tests loopback TCP ports for the servers they start.
//
// A port asked of the kernel (listen on :0, close, pass the number on) lies
// in the ephemeral range, where any outgoing connection of any process may
// take it before the server binds it; with many tests running at once that
// happens. The ports given here lie below the ephemeral range, which the
// kernel never hands to outgoing connections, and one process never gets the
// same port twice, so tests run in parallel do not take each other's.
package freeport
