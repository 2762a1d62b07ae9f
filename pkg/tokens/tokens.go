// Package tokens issues and verifies dataplane tokens the way Kuma does,
// and with the same machinery (keyring.go) user tokens for the API
// (user.go: GlobalSecret signing keys, issuer meshca, Name and Groups).
//
// A dataplane token is a JWT signed with RS256 by a per-mesh RSA-2048 signing
// key (Kuma's choice, so Kuma signing keys and tokens remain interchangeable).
// Signing keys are mesh Secrets named
//
//	dataplane-token-signing-key-<mesh>-<serial>
//
// holding a PKCS#1 PEM private key (base64 in the Secret's data). Serials count
// from 1; the token's `kid` header carries the serial of the key that signed it.
// Generate always signs with the newest key (highest serial). Rotation adds a
// key; removing an old key is deleting its Secret, after which every token it
// signed is refused.
//
// Tokens are revoked by listing their IDs (the `jti` claim) in the mesh Secret
// dataplane-token-revocations-<mesh>, separated by commas or newlines. The
// revocation list is read on every Verify, so a revocation takes effect at once.
//
// # Caches and change tracking
//
// Generate signs with the newest key; its serial is cached per mesh (listing a
// mesh's Secrets is O(Secrets)). Run watches the store: it keeps that cache
// current (also for keys created or deleted by other control planes sharing a
// PostgreSQL store) and maintains a per-mesh generation (Generation) that
// changes whenever the mesh's revocation list or one of its signing keys
// changes. Holders of verified tokens (the SDS server) re-verify only when
// the generation changed, instead of before every use. Without Run, the
// serial cache is checked with one store read per Generate (is there a key
// with the next serial? is the cached key still there?) and Generation
// reports that it cannot tell, so holders re-verify every time.
//
// Claims carry `Name` and `Mesh` (Kuma's claim names) and the registered
// `jti`, `iat` and `exp`. Tokens generated without an explicit validity live
// DefaultValidity (one year; Kuma defaults to ten, which we consider too long
// for a bearer credential that can only be revoked by listing it).
//
// Errors never contain the token itself.
package tokens

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// DefaultValidity is the lifetime of a token generated with validFor == 0.
const DefaultValidity = 365 * 24 * time.Hour

// KeyBits is the size of generated RSA signing keys (as Kuma).
const KeyBits = 2048

// ErrInvalid is wrapped by every error that means "this token is not
// acceptable" (malformed, bad signature, unknown key, expired, revoked).
// Other errors from Verify (e.g. the store is unreachable) are transient.
var ErrInvalid = errors.New("invalid token")

// ErrUnknownSigningKey is wrapped (beside ErrInvalid) when the key a
// token's kid names is not in the store: rotated out, or, on a zone control
// plane, not synced from the global control plane yet.
var ErrUnknownSigningKey = errors.New("unknown signing key")

// unknownKey reads as ErrInvalid and is both it and ErrUnknownSigningKey.
type unknownKey struct{}

func (unknownKey) Error() string { return ErrInvalid.Error() }

func (unknownKey) Is(target error) bool {
	return target == ErrInvalid || target == ErrUnknownSigningKey
}

const (
	signingKeyPrefix  = "dataplane-token-signing-key-"
	revocationsPrefix = "dataplane-token-revocations-"
	signingMethod     = "RS256"
)

// SigningKeyName is the Secret name of a mesh's signing key with the given serial.
func SigningKeyName(mesh string, serial int) string {
	return dataplaneKeyring(mesh).keyName(serial)
}

// RevocationsName is the Secret name listing a mesh's revoked token IDs.
func RevocationsName(mesh string) string {
	return revocationsPrefix + mesh
}

// Claims are the verified identity a token carries.
type Claims struct {
	Mesh      string
	Name      string
	ID        string
	ExpiresAt time.Time
}

// jwtClaims is the wire form, compatible with Kuma's DataplaneClaims.
type jwtClaims struct {
	Name string `json:"Name"`
	Mesh string `json:"Mesh"`
	jwt.RegisteredClaims
}

// Tokens generates and verifies dataplane tokens backed by a store.
type Tokens struct {
	store store.Store
	now   func() time.Time

	mu      sync.Mutex
	keys    map[store.Key]cachedKey
	revoked map[store.Key]cachedRevocations

	gmu      sync.RWMutex
	watching bool              // Run's store watch is established
	counter  uint64            // last generation handed out
	floor    uint64            // generation at the last (re)start or stop of the watch
	meshGen  map[string]uint64 // generation of the mesh's last relevant change
	serials  map[string]int    // newest signing-key serial per keyring.id (cache)
	changed  chan struct{}     // signalled (coalescing) on every bump

	users userTokenCache // verified user tokens
}

// cachedKey is a parsed signing key, valid while the stored record still has
// the same version and spec bytes (the spec comparison guards against a key
// deleted and re-created with the same name, whose version restarts at 1).
type cachedKey struct {
	version int64
	spec    []byte
	key     *rsa.PrivateKey
}

// cachedRevocations is a parsed revocation list, valid while the stored
// record has the same version and spec bytes.
type cachedRevocations struct {
	version int64
	spec    []byte
	ids     map[string]struct{}
}

// New returns Tokens using st for keys and revocations and now as the clock
// (time.Now if nil).
func New(st store.Store, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{
		store:   st,
		now:     now,
		keys:    make(map[store.Key]cachedKey),
		revoked: make(map[store.Key]cachedRevocations),
		meshGen: make(map[string]uint64),
		serials: make(map[string]int),
		changed: make(chan struct{}, 1),
	}
}

// Changed is signalled (coalescing, never blocking the sender) whenever a
// generation grows: a revocation list or a signing key changed. It has one
// consumer, the SDS server, which then re-verifies the open streams at once.
func (t *Tokens) Changed() <-chan struct{} { return t.changed }

// watchRetry is the pause before Run re-establishes a store watch whose
// channel closed while its context was still live.
const watchRetry = time.Second

// Run watches the store for changes of signing keys and revocation lists
// until ctx is done, keeping the signing-key cache current and Generation
// meaningful. It returns nil when ctx ends. Start it once, in its own
// goroutine, next to the servers that use these Tokens.
func (t *Tokens) Run(ctx context.Context) error {
	for {
		ch := t.store.Watch(ctx, api.TypeSecret, api.TypeGlobalSecret)
		// Changes made before the watch was established were not seen:
		// start a new generation for every mesh.
		t.setWatching(true)
		for ev := range ch {
			t.observe(ev)
		}
		t.setWatching(false)
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchRetry):
		}
	}
}

func (t *Tokens) setWatching(on bool) {
	t.users.setWatching(on)
	t.gmu.Lock()
	defer t.gmu.Unlock()
	t.watching = on
	t.counter++
	t.floor = t.counter
	if !on {
		// Unwatched, the serial cache is validated on use; keep it.
		clear(t.meshGen)
	}
}

// Generation returns a counter that never decreases and grows past every
// value returned before whenever the verdict of Verify for a token of mesh
// may have changed other than by time passing: the mesh's revocation list or
// one of its signing keys was created, changed or deleted (as seen by Run's
// store watch, which includes other control planes on a shared store), or
// the watch was (re)established. Mesh "" stands for all meshes. ok is false
// while Run is not watching the store: every verdict must then be re-checked
// with Verify.
//
// Take the generation before calling Verify: while Generation(mesh) is not
// larger, the verdict holds (until the token expires). Changes are seen
// when the store delivers their event, a few milliseconds after the commit
// (longer for another control plane's commit on PostgreSQL; events lost
// while its listener reconnects are not seen at all, so holders should
// still re-verify periodically).
func (t *Tokens) Generation(mesh string) (gen uint64, ok bool) {
	t.gmu.RLock()
	defer t.gmu.RUnlock()
	if !t.watching {
		return 0, false
	}
	if mesh == "" {
		return t.counter, true
	}
	return max(t.meshGen[mesh], t.floor), true
}

// observe updates caches and generations from one store event.
func (t *Tokens) observe(ev store.Event) {
	r := ev.Record
	if r.Type == api.TypeGlobalSecret {
		if isUserTokenRecord(r.Name) {
			t.users.bump()
		}
		return
	}
	if r.Type != api.TypeSecret || r.Mesh == "" {
		return
	}
	if rest, ok := strings.CutPrefix(r.Name, revocationsPrefix); ok && rest == r.Mesh {
		t.bump(r.Mesh, nil)
		return
	}
	rest, ok := strings.CutPrefix(r.Name, signingKeyPrefix)
	if !ok {
		return
	}
	rest, ok = strings.CutPrefix(rest, r.Mesh+"-")
	if !ok {
		return
	}
	serial, ok := parseSerial(rest)
	if !ok {
		return
	}
	ring := dataplaneKeyring(r.Mesh).id()
	t.bump(r.Mesh, func() {
		if ev.Kind == store.EventDeleted {
			if t.serials[ring] == serial {
				delete(t.serials, ring) // re-listed on the next Generate
			}
		} else if cur, ok := t.serials[ring]; ok && serial > cur {
			t.serials[ring] = serial
		}
	})
	if ev.Kind == store.EventDeleted {
		t.mu.Lock()
		delete(t.keys, r.Key)
		t.mu.Unlock()
	}
}

// bump gives mesh a new generation, running also (if not nil) under the same lock.
func (t *Tokens) bump(mesh string, also func()) {
	t.gmu.Lock()
	defer t.gmu.Unlock()
	t.counter++
	t.meshGen[mesh] = t.counter
	if also != nil {
		also()
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// signingSerial returns the newest signing-key serial of ring (0 if none),
// from the cache when it can be trusted.
func (t *Tokens) signingSerial(ctx context.Context, ring keyring) (int, error) {
	t.gmu.RLock()
	serial, ok := t.serials[ring.id()]
	// Run watches dataplane keys only: user keys are always checked.
	trusted := t.watching && ring.typ == api.TypeSecret
	t.gmu.RUnlock()
	if ok && !trusted {
		// Nobody tells us about rotations by other control planes: one
		// read for the next serial instead of listing every key.
		_, err := t.store.Get(ctx, ring.keyKey(serial+1))
		switch {
		case err == nil:
			ok = false
		case !errors.Is(err, store.ErrNotFound):
			return 0, fmt.Errorf("read signing key %d of %s: %w", serial+1, ring.what, err)
		}
	}
	if ok {
		return serial, nil
	}
	serial, err := t.newestSerial(ctx, ring)
	if err != nil {
		return 0, err
	}
	t.noteSerial(ring, serial)
	return serial, nil
}

// noteSerial records that a signing key with serial exists in ring.
func (t *Tokens) noteSerial(ring keyring, serial int) {
	if serial < 1 {
		return
	}
	t.gmu.Lock()
	defer t.gmu.Unlock()
	t.serials[ring.id()] = max(t.serials[ring.id()], serial)
}

// forgetSerial drops the cached serial of ring if it is serial (that key is gone).
func (t *Tokens) forgetSerial(ring keyring, serial int) {
	t.gmu.Lock()
	defer t.gmu.Unlock()
	if t.serials[ring.id()] == serial {
		delete(t.serials, ring.id())
	}
}

// Generate issues a token for dataplane name in mesh, valid for validFor
// (DefaultValidity if 0). The mesh's first signing key is created on demand.
func (t *Tokens) Generate(ctx context.Context, mesh, name string, validFor time.Duration) (string, error) {
	if mesh == "" || name == "" {
		return "", errors.New("generate dataplane token: mesh and name are required")
	}
	if validFor < 0 {
		return "", fmt.Errorf("generate dataplane token: negative validity %s", validFor)
	}
	if validFor == 0 {
		validFor = DefaultValidity
	}
	if err := t.checkMesh(ctx, mesh); err != nil {
		return "", fmt.Errorf("generate dataplane token: %w", err)
	}
	claims := &jwtClaims{Name: name, Mesh: mesh}
	signed, err := t.sign(ctx, dataplaneKeyring(mesh), validFor, &claims.RegisteredClaims, claims)
	if err != nil {
		return "", fmt.Errorf("generate dataplane token: %w", err)
	}
	return signed, nil
}

// sign fills reg (part of claims) with a new ID, the issue time and the
// expiry, and signs claims with ring's newest key (created if none).
func (t *Tokens) sign(ctx context.Context, ring keyring, validFor time.Duration, reg *jwt.RegisteredClaims, claims jwt.Claims) (string, error) {
	key, serial, err := t.signingKey(ctx, ring)
	if err != nil {
		return "", err
	}
	id, err := randomID()
	if err != nil {
		return "", err
	}
	now := t.now()
	reg.ID = id
	reg.IssuedAt = jwt.NewNumericDate(now)
	reg.ExpiresAt = jwt.NewNumericDate(now.Add(validFor))
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = strconv.Itoa(serial)
	signed, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return signed, nil
}

// signingKey returns the newest signing key of ring and its serial, creating
// the first one if there is none.
func (t *Tokens) signingKey(ctx context.Context, ring keyring) (*rsa.PrivateKey, int, error) {
	for attempt := 0; ; attempt++ {
		serial, err := t.signingSerial(ctx, ring)
		if err != nil {
			return nil, 0, err
		}
		if serial == 0 {
			serial, err = t.createKey(ctx, ring, 1)
			if errors.Is(err, store.ErrAlreadyExists) {
				// A concurrent caller created it first; use whatever is newest now.
				serial, err = t.newestSerial(ctx, ring)
				if err == nil && serial == 0 {
					err = errors.New("signing key vanished after concurrent creation")
				}
			}
			if err != nil {
				return nil, 0, err
			}
			t.noteSerial(ring, serial)
		}
		rec, err := t.store.Get(ctx, ring.keyKey(serial))
		if errors.Is(err, store.ErrNotFound) && attempt == 0 {
			t.forgetSerial(ring, serial) // deleted since cached: list again
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read signing key %d of %s: %w", serial, ring.what, err)
		}
		key, err := t.parseKey(rec)
		if err != nil {
			return nil, 0, err
		}
		return key, serial, nil
	}
}

// Verify checks a token's signature (with the key its kid names), expiry and
// revocation, and returns its claims. Errors that mean the token is not
// acceptable wrap ErrInvalid.
func (t *Tokens) Verify(ctx context.Context, token string) (Claims, error) {
	var unverified jwtClaims
	parsed, _, err := jwt.NewParser().ParseUnverified(token, &unverified)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: malformed token: %w", ErrInvalid, err)
	}
	mesh := unverified.Mesh
	if mesh == "" || unverified.Name == "" {
		return Claims{}, fmt.Errorf("%w: token has no Mesh or Name claim", ErrInvalid)
	}
	ring := dataplaneKeyring(mesh)
	var claims jwtClaims
	if err := t.verifySigned(ctx, ring, token, parsed.Header["kid"], &claims); err != nil {
		if errors.Is(err, ErrInvalid) {
			return Claims{}, err
		}
		return Claims{}, fmt.Errorf("verify dataplane token: %w", err)
	}
	if claims.Mesh != mesh || claims.Name != unverified.Name {
		// Cannot happen for a valid signature, but never trust the unverified parse.
		return Claims{}, fmt.Errorf("%w: inconsistent claims", ErrInvalid)
	}
	if claims.ID == "" {
		return Claims{}, fmt.Errorf("%w: token has no ID (jti) and could not be revoked", ErrInvalid)
	}
	revoked, err := t.isRevoked(ctx, ring, claims.ID)
	if err != nil {
		return Claims{}, fmt.Errorf("verify dataplane token: %w", err)
	}
	if revoked {
		return Claims{}, fmt.Errorf("%w: token %s of dataplane %q in mesh %q is revoked", ErrInvalid, claims.ID, claims.Name, mesh)
	}
	return Claims{Mesh: claims.Mesh, Name: claims.Name, ID: claims.ID, ExpiresAt: claims.ExpiresAt.Time}, nil
}

// verifySigned checks token's signature with ring's key whose serial is kid
// (the unverified header) and its expiry, decoding it into claims.
// Errors meaning the token is not acceptable wrap ErrInvalid.
func (t *Tokens) verifySigned(ctx context.Context, ring keyring, token string, kid any, claims jwt.Claims, opts ...jwt.ParserOption) error {
	k, _ := kid.(string)
	serial, ok := parseSerial(k)
	if !ok {
		return fmt.Errorf("%w: token has no valid kid header", ErrInvalid)
	}
	rec, err := t.store.Get(ctx, ring.keyKey(serial))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: signing key %d of %s does not exist (it was rotated out?)", unknownKey{}, serial, ring.what)
	}
	if err != nil {
		return fmt.Errorf("read signing key %d of %s: %w", serial, ring.what, err)
	}
	key, err := t.parseKey(rec)
	if err != nil {
		return err
	}
	opts = append(opts,
		jwt.WithValidMethods([]string{signingMethod}),
		jwt.WithTimeFunc(t.now),
		jwt.WithExpirationRequired(),
	)
	if _, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return &key.PublicKey, nil }, opts...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// RotateSigningKey adds a signing key with the next serial; new tokens are
// signed with it. Tokens signed by older keys keep verifying until their key's
// Secret is deleted.
func (t *Tokens) RotateSigningKey(ctx context.Context, mesh string) (int, error) {
	if mesh == "" {
		return 0, errors.New("rotate signing key: mesh is required")
	}
	if err := t.checkMesh(ctx, mesh); err != nil {
		return 0, fmt.Errorf("rotate signing key: %w", err)
	}
	return t.rotate(ctx, dataplaneKeyring(mesh))
}

func (t *Tokens) rotate(ctx context.Context, ring keyring) (int, error) {
	const attempts = 5
	for range attempts {
		serial, err := t.newestSerial(ctx, ring)
		if err != nil {
			return 0, fmt.Errorf("rotate signing key: %w", err)
		}
		created, err := t.createKey(ctx, ring, serial+1)
		if errors.Is(err, store.ErrAlreadyExists) {
			continue // a concurrent rotation took this serial
		}
		if err != nil {
			return 0, fmt.Errorf("rotate signing key: %w", err)
		}
		t.noteSerial(ring, created)
		return created, nil
	}
	return 0, fmt.Errorf("rotate signing key of %s: too many concurrent rotations", ring.what)
}

func (t *Tokens) checkMesh(ctx context.Context, mesh string) error {
	_, err := t.store.Get(ctx, store.Key{Type: api.TypeMesh, Name: mesh})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("mesh %q: %w", mesh, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read mesh %q: %w", mesh, err)
	}
	return nil
}

// newestSerial returns the highest signing-key serial of ring, 0 if none.
func (t *Tokens) newestSerial(ctx context.Context, ring keyring) (int, error) {
	recs, err := t.store.List(ctx, ring.typ, ring.mesh)
	if err != nil {
		return 0, fmt.Errorf("list signing keys of %s: %w", ring.what, err)
	}
	newest := 0
	for _, r := range recs {
		rest, ok := strings.CutPrefix(r.Name, ring.keyPrefix)
		if !ok {
			continue
		}
		if n, ok := parseSerial(rest); ok {
			newest = max(newest, n)
		}
	}
	return newest, nil
}

// parseSerial parses the serial suffix of a signing-key name (canonical
// decimal, at least 1).
func parseSerial(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// NewSigningKey returns a new signing key as PEM, the form a
// dataplane-token-signing-key Secret holds (base64 of it in its data).
func NewSigningKey() ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
}

// ParseSigningKey checks that data (PEM) is a usable signing key.
func ParseSigningKey(data []byte) error {
	_, err := parsePrivateKey(data)
	return err
}

func (t *Tokens) createKey(ctx context.Context, ring keyring, serial int) (int, error) {
	keyPEM, err := NewSigningKey()
	if err != nil {
		return 0, err
	}
	spec, err := api.MarshalSpec(&api.Secret{Data: base64.StdEncoding.EncodeToString(keyPEM)})
	if err != nil {
		return 0, fmt.Errorf("encode signing key: %w", err)
	}
	rec := store.Record{Key: ring.keyKey(serial), Spec: spec}
	if err := t.store.Commit(ctx, store.Op{Kind: store.OpCreate, Record: rec}); err != nil {
		return 0, fmt.Errorf("store signing key %d of %s: %w", serial, ring.what, err)
	}
	return serial, nil
}

// parseKey decodes a signing-key Secret, caching by (name, version, spec).
func (t *Tokens) parseKey(rec store.Record) (*rsa.PrivateKey, error) {
	t.mu.Lock()
	c, ok := t.keys[rec.Key]
	t.mu.Unlock()
	if ok && c.version == rec.Version && bytes.Equal(c.spec, rec.Spec) {
		return c.key, nil
	}
	data, err := secretData(rec)
	if err != nil {
		return nil, err
	}
	key, err := parsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %q of mesh %q: %w", rec.Name, rec.Mesh, err)
	}
	t.mu.Lock()
	t.keys[rec.Key] = cachedKey{version: rec.Version, spec: bytes.Clone(rec.Spec), key: key}
	t.mu.Unlock()
	return key, nil
}

func parsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, want RSA", k)
		}
		return rk, nil
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
}

func (t *Tokens) isRevoked(ctx context.Context, ring keyring, id string) (bool, error) {
	rec, err := t.store.Get(ctx, ring.revocationsKey())
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read revocations of %s: %w", ring.what, err)
	}
	t.mu.Lock()
	c, ok := t.revoked[rec.Key]
	t.mu.Unlock()
	if !ok || c.version != rec.Version || !bytes.Equal(c.spec, rec.Spec) {
		data, err := secretData(rec)
		if err != nil {
			return false, err
		}
		ids := make(map[string]struct{})
		for _, f := range strings.FieldsFunc(string(data), func(r rune) bool {
			return r == ',' || r == '\n' || r == '\r' || r == ' ' || r == '\t'
		}) {
			ids[f] = struct{}{}
		}
		c = cachedRevocations{version: rec.Version, spec: bytes.Clone(rec.Spec), ids: ids}
		t.mu.Lock()
		t.revoked[rec.Key] = c
		t.mu.Unlock()
	}
	_, revoked := c.ids[id]
	return revoked, nil
}

func secretData(rec store.Record) ([]byte, error) {
	var s api.Secret
	if err := json.Unmarshal(rec.Spec, &s); err != nil {
		return nil, fmt.Errorf("secret %q of mesh %q: %w", rec.Name, rec.Mesh, err)
	}
	data, err := base64.StdEncoding.DecodeString(s.Data)
	if err != nil {
		return nil, fmt.Errorf("secret %q of mesh %q: data is not base64: %w", rec.Name, rec.Mesh, err)
	}
	return data, nil
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random token ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
