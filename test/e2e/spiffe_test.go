package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestSPIFFEConformance hands the agent's files to the reference SPIFFE
// library: a mesh's default certificates are X509-SVIDs that go-spiffe
// parses and verifies against the mesh's trust bundle (ca.pem); the Kuma
// form (mtls.svidFormat: kuma), with its kuma:// SANs, is refused by it,
// as the specification wants.
func TestSPIFFEConformance(t *testing.T) {
	t.Parallel()
	cp := startCP(t, t.TempDir())
	cp.apply(t, builtinMeshWith("1h"))
	cp.apply(t, dataplanes("default"))
	backend := startAgent(t, cp, "default", "backend-1", "backend-1")
	first := backend.waitCert(t)

	read := func(name string) []byte { return []byte(backend.file(name)) }
	td := spiffeid.RequireTrustDomainFromString("default")
	bundle, err := x509bundle.Parse(td, read("ca.pem"))
	if err != nil {
		t.Fatalf("ca.pem as the trust domain's bundle: %v", err)
	}
	svid, err := x509svid.Parse(read("cert.pem"), read("key.pem"))
	if err != nil {
		t.Fatalf("x509svid.Parse of the default form: %v", err)
	}
	if svid.ID.String() != "spiffe://default/backend" {
		t.Errorf("SPIFFE ID %s, want spiffe://default/backend", svid.ID)
	}
	id, chains, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || id.String() != "spiffe://default/backend" || len(chains) == 0 {
		t.Fatalf("x509svid.Verify against ca.pem: %v (id %s)", err, id)
	}

	// The Kuma form: every service's SPIFFE ID and kuma:// tag SANs.
	cp.apply(t, strings.Replace(builtinMeshWith("1h"), "mtls:\n", "mtls:\n  svidFormat: kuma\n", 1))
	var kuma []string
	waitFor(t, 20*time.Second, "re-issue in the Kuma form", func() bool {
		c := backend.leaf()
		if c == nil || sameSerial(c, first) {
			return false
		}
		kuma = nil
		for _, u := range c.URIs {
			kuma = append(kuma, u.String())
		}
		return true
	})
	if strings.Join(kuma, " ") != "spiffe://default/backend kuma://kuma.io/service/backend" {
		t.Errorf("Kuma form URI SANs = %v", kuma)
	}
	if _, err := x509svid.Parse(read("cert.pem"), read("key.pem")); err == nil || !strings.Contains(err.Error(), "more than one URI SAN") {
		t.Errorf("x509svid.Parse of the Kuma form = %v, want the refusal of several URI SANs", err)
	}
}

// requireSVID checks that the agent's files are an X509-SVID for wantID that
// verifies against its ca.pem, for any backend.
func requireSVID(t *testing.T, a *agent, wantID string) {
	t.Helper()
	id := spiffeid.RequireFromString(wantID)
	bundle, err := x509bundle.Parse(id.TrustDomain(), []byte(a.file("ca.pem")))
	if err != nil {
		t.Fatalf("%s: ca.pem: %v", wantID, err)
	}
	svid, err := x509svid.Parse([]byte(a.file("cert.pem")), []byte(a.file("key.pem")))
	if err != nil {
		t.Fatalf("%s: x509svid.Parse: %v", wantID, err)
	}
	if got, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil || got != id {
		t.Fatalf("x509svid.Verify: %v (id %s, want %s)", err, got, wantID)
	}
}
