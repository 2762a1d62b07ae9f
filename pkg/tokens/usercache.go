package tokens

import (
	"context"
	"crypto/sha256"
	"strings"
	"sync"
)

// userTokenCache remembers user tokens whose signature was verified, by
// hash, so that a client sending the same token on every request does not
// cost an RSA verification and a JSON decoding each time. An entry holds
// while the signing key record that verified it is unchanged (same version
// and bytes) and the token is not revoked; expiry is checked on every use.
//
// While Run watches the store, user-token signing keys and the revocation
// list change the cache's generation, and an entry checked at the current
// generation is used without reading the store at all. Otherwise the key
// and the revocation list are read on every use.
type userTokenCache struct {
	mu       sync.Mutex
	entries  map[[32]byte]verifiedUserToken
	watching bool
	gen      uint64
}

type verifiedUserToken struct {
	claims     UserClaims
	serial     int
	keyVersion int64
	keySpec    [32]byte
	gen        uint64 // generation the entry was last checked at (valid if watching)
}

func isUserTokenRecord(name string) bool {
	_, isKey := strings.CutPrefix(name, UserSigningKeyPrefix)
	return isKey || name == UserRevocationsName
}

func (c *userTokenCache) bump() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
}

func (c *userTokenCache) setWatching(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watching = on
	c.gen++
}

// generation returns the current generation, and whether it means anything.
func (c *userTokenCache) generation() (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen, c.watching
}

// checked records that the entry of sum was found valid at gen.
func (c *userTokenCache) checked(sum [32]byte, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.entries[sum]; ok {
		v.gen = gen
		c.entries[sum] = v
	}
}

// maxCachedUserTokens bounds the cache; past it, it starts over.
const maxCachedUserTokens = 10000

func (c *userTokenCache) get(sum [32]byte) (verifiedUserToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[sum]
	return v, ok
}

func (c *userTokenCache) put(sum [32]byte, v verifiedUserToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxCachedUserTokens {
		c.entries = make(map[[32]byte]verifiedUserToken)
	}
	c.entries[sum] = v
}

// cachedUser returns the claims of a token verified before whose signing
// key is unchanged; fresh says they were checked at the current generation
// (not revoked, nothing to read).
func (t *Tokens) cachedUser(ctx context.Context, sum [32]byte) (c UserClaims, fresh, ok bool) {
	gen, watching := t.users.generation()
	v, ok := t.users.get(sum)
	if !ok {
		return UserClaims{}, false, false
	}
	if watching && v.gen == gen {
		return v.claims, true, true
	}
	rec, err := t.store.Get(ctx, userKeyring().keyKey(v.serial))
	if err != nil || rec.Version != v.keyVersion || sha256.Sum256(rec.Spec) != v.keySpec {
		return UserClaims{}, false, false
	}
	return v.claims, false, true
}

// rememberUser caches the claims of a token just verified with the key of serial.
func (t *Tokens) rememberUser(ctx context.Context, sum [32]byte, serial int, c UserClaims) {
	gen, _ := t.users.generation()
	rec, err := t.store.Get(ctx, userKeyring().keyKey(serial))
	if err != nil {
		return
	}
	t.users.put(sum, verifiedUserToken{claims: c, serial: serial, keyVersion: rec.Version, keySpec: sha256.Sum256(rec.Spec), gen: gen - 1})
}
