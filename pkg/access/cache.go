package access

import (
	"context"
	"strings"
	"sync"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/authn"
	"meshca/pkg/store"
)

// grantsCache keeps each identity's Grants while the roles and bindings do
// not change. It is used only while Run watches the store: a change is
// then seen when the store delivers its event (milliseconds after the
// commit) and empties the cache.
type grantsCache struct {
	mu       sync.Mutex
	watching bool
	gen      uint64 // grows at every reset
	byWho    map[string]Grants
}

// maxCachedIdentities bounds the cache; past it, it starts over.
const maxCachedIdentities = 10000

func cacheKey(id authn.Identity) string {
	return id.Name + "\x00" + strings.Join(id.Groups, "\x00")
}

// get returns the cached Grants of id, or the generation to pass to put
// once they are read.
func (c *grantsCache) get(id authn.Identity) (Grants, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.watching {
		return Grants{}, c.gen, false
	}
	g, ok := c.byWho[cacheKey(id)]
	return g, c.gen, ok
}

// put caches g unless a change was seen since get returned gen (g may
// then predate it).
func (c *grantsCache) put(id authn.Identity, g Grants, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.watching || gen != c.gen {
		return
	}
	if len(c.byWho) >= maxCachedIdentities {
		clear(c.byWho)
	}
	c.byWho[cacheKey(id)] = g
}

func (c *grantsCache) reset(watching bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watching = watching
	c.gen++
	clear(c.byWho)
}

// Run watches st for changes of AccessRoles and AccessRoleBindings until
// ctx is done, so that Grants can be cached in between. Without it, every
// check reads the roles and bindings.
func (c *Checker) Run(ctx context.Context, st store.Store) {
	for ctx.Err() == nil {
		ch := st.Watch(ctx, api.TypeAccessRole, api.TypeAccessRoleBinding)
		// Changes made before the watch was established were not seen.
		c.cache.reset(true)
		for range ch {
			c.cache.reset(true)
		}
		c.cache.reset(false)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
