package controlplane

import (
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/acmpca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/certmanager"
	"meshca/pkg/ca/provided"
	"meshca/pkg/ca/vault"
)

// Backends lists the CA types of this build: adding one is one line here and
// one folder under pkg/ca.
func Backends() map[string]ca.Constructor {
	return map[string]ca.Constructor{
		api.BackendBuiltin:     builtin.New,
		api.BackendProvided:    provided.New,
		api.BackendVault:       vault.New,
		api.BackendACMPCA:      acmpca.New,
		api.BackendCertManager: certmanager.New,
	}
}
