package tokens

import (
	"fmt"
	"strconv"

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// keyring says where one kind of token keeps its signing keys and its
// revocation list: dataplane tokens in their mesh's Secrets, user tokens in
// GlobalSecrets. Everything else (serials, rotation, caching, revocation)
// is the same machinery for both.
type keyring struct {
	typ         string // api.TypeSecret or api.TypeGlobalSecret
	mesh        string // "" for GlobalSecrets
	keyPrefix   string // the key with serial n is named keyPrefix + n
	revocations string
	what        string // "mesh \"default\"", "user tokens": for messages
}

func dataplaneKeyring(mesh string) keyring {
	return keyring{typ: api.TypeSecret, mesh: mesh, keyPrefix: signingKeyPrefix + mesh + "-",
		revocations: RevocationsName(mesh), what: fmt.Sprintf("mesh %q", mesh)}
}

func userKeyring() keyring {
	return keyring{typ: api.TypeGlobalSecret, keyPrefix: UserSigningKeyPrefix,
		revocations: UserRevocationsName, what: "user tokens"}
}

// id keys the ring's entry in the serial cache.
func (k keyring) id() string { return k.typ + "/" + k.mesh + "/" + k.keyPrefix }

// keyName is the name of the signing key with the given serial.
func (k keyring) keyName(serial int) string { return k.keyPrefix + strconv.Itoa(serial) }

func (k keyring) keyKey(serial int) store.Key {
	return store.Key{Type: k.typ, Mesh: k.mesh, Name: k.keyName(serial)}
}

func (k keyring) revocationsKey() store.Key {
	return store.Key{Type: k.typ, Mesh: k.mesh, Name: k.revocations}
}
