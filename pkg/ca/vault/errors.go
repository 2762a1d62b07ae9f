package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"

	"meshca/pkg/api"
)

// ttlCapWarning is the start of the warning Vault's PKI returns when it
// shortens a certificate to the role's max_ttl instead of refusing it.
const ttlCapWarning = "is longer than permitted maxTTL"

// vaultError turns an error of a Vault call into an *api.ValidationError
// whose field is the part of the backend's conf the error concerns, quoting
// Vault's own error text. op names the call ("issue", "read CA chain").
// Context errors are wrapped as they are, so callers can errors.Is them.
func vaultError(op, path string, err error, authField, defaultField string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("vault %s (%s): %w", op, path, err)
	}
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		return api.FieldErr(fieldForResponse(re.StatusCode, msg, authField, defaultField),
			"Vault refused to %s (%s %s: HTTP %d): %s", op, re.HTTPMethod, path, re.StatusCode, msg)
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return api.FieldErr(fServerName, "cannot %s: Vault's TLS certificate does not match the server name: %v", op, hostErr)
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) {
		return api.FieldErr(fCaCert, "cannot %s: Vault's TLS certificate is not trusted: %v", op, rootCause(err))
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return api.FieldErr(fAuthTLS, "cannot %s: Vault refused the TLS connection: %v", op, alert)
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) {
		return api.FieldErr(fAddress, "cannot %s: Vault is not reachable: %v", op, rootCause(err))
	}
	return api.FieldErr(defaultField, "cannot %s: %v", op, err)
}

// fieldForResponse picks the conf field an error answer of Vault concerns.
func fieldForResponse(status int, msg, authField, defaultField string) string {
	lower := strings.ToLower(msg)
	switch {
	case status == http.StatusNotFound && authField != fAuth && strings.Contains(lower, "no handler for route"):
		// An auth path is missing: the auth method or the namespace is wrong.
		return authField
	case status == http.StatusForbidden:
		return authField
	case status == http.StatusNotFound:
		return defaultField
	case status >= 500:
		return fAddress
	case strings.Contains(lower, "unknown role"):
		return fRole
	case strings.Contains(lower, "ttl"), strings.Contains(lower, "notafter"), strings.Contains(lower, "not_after"):
		return fExpiration
	case strings.Contains(lower, "common name"), strings.Contains(lower, "common_name"):
		return fCommonName
	case strings.Contains(lower, "subject alternative name"):
		return fRole
	}
	return defaultField
}

// rootCause strips the wrapping the HTTP client adds ("Put \"https://...\": ").
func rootCause(err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// ttlWarning returns Vault's warning that it shortened the certificate to
// the role's max_ttl, or "".
func ttlWarning(warnings []string) string {
	for _, w := range warnings {
		if strings.Contains(w, ttlCapWarning) {
			return w
		}
	}
	return ""
}
