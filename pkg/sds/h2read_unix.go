//go:build unix

package sds

import "syscall"

// peekReady is a syscall.RawConn.Read callback: true when the socket has
// data, EOF or an error (a peek, which consumes nothing), false to wait.
func peekReady(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
}
