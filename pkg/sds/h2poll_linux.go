//go:build linux

package sds

import (
	"errors"
	"sync"
	"syscall"
)

// poller waits for every idle connection at once: one epoll instance and
// one goroutine, so an idle connection has no goroutine of its own (the
// runtime's netpoller would need a goroutine parked per connection, with at
// least a 4 KiB stack). A connection's socket is added level-triggered and
// one-shot: when it becomes readable, a goroutine is started to read its
// frames, and the socket is armed again when that goroutine finds nothing
// more to read. Closing a socket removes it from the epoll set.
type poller struct {
	epfd int
	wake [2]int // a pipe whose read end stops the loop

	mu    sync.Mutex
	conns map[uint64]*h2Conn // armed or reading; guarded by mu
	next  uint64             // guarded by mu
}

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// newPoller starts a poller; nil if the system refuses one (connections
// then wait on their own goroutine).
func newPoller() *poller {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	p := &poller{epfd: epfd, conns: make(map[uint64]*h2Conn), next: 1}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // id 0
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil
	}
	go p.loop()
	return p
}

func (p *poller) closeFDs() {
	_ = syscall.Close(p.epfd)
	_ = syscall.Close(p.wake[0])
	_ = syscall.Close(p.wake[1])
}

// stop ends the loop, which closes the epoll instance.
func (p *poller) stop() {
	_, _ = syscall.Write(p.wake[1], []byte{0})
}

func (p *poller) loop() {
	defer p.closeFDs()
	var events [128]syscall.EpollEvent
	for {
		n, err := syscall.EpollWait(p.epfd, events[:], -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				return
			}
			p.mu.Lock()
			h := p.conns[id]
			p.mu.Unlock()
			if h != nil {
				go h.readLoop(true)
			}
		}
	}
}

// arm waits for h's socket to become readable, then runs h.readLoop(true) on a
// new goroutine. An error means the socket is closed.
func (p *poller) arm(h *h2Conn) error {
	if h.raw == nil {
		return errors.New("no raw connection")
	}
	// Under mu: the goroutine the loop starts for h acquires mu after
	// this one releases it, so it sees everything the reader did before.
	p.mu.Lock()
	defer p.mu.Unlock()
	op := syscall.EPOLL_CTL_MOD
	if h.pollID == 0 {
		h.pollID = p.next
		p.next++
		p.conns[h.pollID] = h
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(uint32(h.pollID)), Pad: int32(uint32(h.pollID >> 32))}
	var ctlErr error
	// Control keeps the descriptor open while it runs, so it cannot be
	// another connection's by then.
	if err := h.raw.Control(func(fd uintptr) { ctlErr = syscall.EpollCtl(p.epfd, op, int(fd), &ev) }); err != nil {
		return err
	}
	return ctlErr
}

// forget drops a closed connection.
func (p *poller) forget(h *h2Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, h.pollID)
}
