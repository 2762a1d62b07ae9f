package tokenreview

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

// The cache stays within its bound, drops lapsed entries first and never
// answers with a lapsed one.
func TestCacheBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newCache(100)
	key := func(i int) [32]byte { return sha256.Sum256([]byte(fmt.Sprint("token-", i))) }
	for i := range 50 {
		c.put(key(i), entry{id: Identity{Namespace: "a"}, until: now.Add(time.Second)}, now)
	}
	for i := 50; i < 100; i++ {
		c.put(key(i), entry{id: Identity{Namespace: "b"}, until: now.Add(time.Hour)}, now)
	}
	later := now.Add(time.Minute)
	c.put(key(100), entry{until: later.Add(time.Hour)}, later)
	if n := c.len(); n != 51 {
		t.Fatalf("%d entries after adding one to a full cache with 50 lapsed ones, want 51", n)
	}
	if _, ok := c.get(key(1), later); ok {
		t.Fatal("a lapsed entry was answered")
	}
	for i := 101; i < 1000; i++ {
		c.put(key(i), entry{until: later.Add(time.Hour)}, later)
		if n := c.len(); n > 100 {
			t.Fatalf("%d entries, bound 100", n)
		}
	}
	if _, ok := c.get(key(999), later); !ok {
		t.Fatal("the newest entry is missing")
	}
}
