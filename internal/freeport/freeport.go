package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// low is the first port handed out; below it are well-known and commonly
// configured ports.
const low = 10000

// defaultEphemeralStart is Linux's default first ephemeral port, used when
// /proc does not say.
const defaultEphemeralStart = 32768

// picker walks the ports below the ephemeral range from a random start, so
// two processes (two test packages) rarely try the same ports at once. It is
// process-wide because the ports it hands out are: a port given to one test
// must not be given to another test of the same process.
var picker struct {
	mu   sync.Mutex
	next int // 0 until the first call
	end  int // first port of the ephemeral range
}

// Addr returns "127.0.0.1:PORT" for a port nobody listens on now, which this
// process has not handed out before.
func Addr() (string, error) {
	p, err := Ports(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p[0])), nil
}

// Ports returns n distinct such ports.
func Ports(n int) ([]int, error) {
	picker.mu.Lock()
	defer picker.mu.Unlock()
	if picker.next == 0 {
		picker.end = ephemeralStart()
		if picker.end <= low+1000 {
			return nil, fmt.Errorf("freeport: the ephemeral range starts at %d, leaving no room below it", picker.end)
		}
		picker.next = low + rand.IntN(picker.end-low)
	}
	var ports []int
	for tried := 0; len(ports) < n; tried++ {
		if tried == picker.end-low {
			return nil, errors.New("freeport: no free port below the ephemeral range")
		}
		p := picker.next
		picker.next++
		if picker.next == picker.end {
			picker.next = low
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // someone else's
		}
		l.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// ephemeralStart reads the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralStart
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return defaultEphemeralStart
	}
	p, err := strconv.Atoi(f[0])
	if err != nil {
		return defaultEphemeralStart
	}
	return p
}
