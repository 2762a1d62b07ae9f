package freeport

import (
	"net"
	"strconv"
	"testing"
)

// The ports handed out are distinct, below the ephemeral range, and a server
// can listen on each.
func TestPorts(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		ports, err := Ports(3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			if p < low || p >= ephemeralStart() {
				t.Fatalf("port %d outside [%d, %d)", p, low, ephemeralStart())
			}
		}
	}
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the address handed out: %v", err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(addr)
	if p, _ := strconv.Atoi(port); seen[p] {
		t.Fatalf("Addr handed out %s, already given by Ports", addr)
	}
}

// A port in use by another listener is skipped.
func TestPortsSkipsPortsInUse(t *testing.T) {
	first, err := Ports(1)
	if err != nil {
		t.Fatal(err)
	}
	// The next port in the walk, taken by someone else.
	picker.mu.Lock()
	taken := picker.next
	picker.mu.Unlock()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(taken)))
	if err != nil {
		t.Skipf("port %d busy already: %v", taken, err)
	}
	defer l.Close()
	got, err := Ports(1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] == taken || got[0] == first[0] {
		t.Fatalf("handed out %d (taken %d, previous %d)", got[0], taken, first[0])
	}
}
