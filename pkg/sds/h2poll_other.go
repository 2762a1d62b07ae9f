//go:build !linux

package sds

import "errors"

// poller is Linux's epoll; elsewhere a connection waits on its own goroutine.
type poller struct{}

func newPoller() *poller              { return nil }
func (p *poller) stop()               {}
func (p *poller) arm(h *h2Conn) error { return errors.New("no poller") }
func (p *poller) forget(h *h2Conn)    {}
