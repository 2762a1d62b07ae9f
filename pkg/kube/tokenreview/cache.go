package tokenreview

import (
	"sync"
	"time"
)

// cache holds positive reviews by the SHA-256 of their token, at most max.
type cache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]entry
}

type entry struct {
	id    Identity
	until time.Time
}

func newCache(max int) *cache { return &cache{max: max, m: make(map[[32]byte]entry)} }

func (c *cache) get(k [32]byte, now time.Time) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return entry{}, false
	}
	if !now.Before(e.until) {
		delete(c.m, k)
		return entry{}, false
	}
	return e, true
}

// put adds an entry; when full it first drops the lapsed entries, then, if
// that was not enough, a tenth of the others (any: they are all re-reviewed
// on their next use, which costs one API call each).
func (c *cache) put(k [32]byte, e entry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for key, old := range c.m {
			if !now.Before(old.until) {
				delete(c.m, key)
			}
		}
		for key := range c.m {
			if len(c.m) < c.max-c.max/10 {
				break
			}
			delete(c.m, key)
		}
	}
	c.m[k] = e
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
