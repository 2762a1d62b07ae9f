package api

// SVID formats a Mesh's data-plane certificates can have (mtls.svidFormat).
const (
	// SVIDFormatSPIFFE is an X509-SVID as the SPIFFE specification has it:
	// exactly one URI SAN, spiffe://<mesh>/<service>, so go-spiffe, SPIRE
	// federation and SPIFFE-aware proxies accept it. A data plane with
	// several services gets the SPIFFE ID of its first one (inbound order).
	SVIDFormatSPIFFE = "spiffe"
	// SVIDFormatKuma is Kuma's form: the SPIFFE ID of every service plus
	// one kuma://<tag>/<value> URI SAN per tag, for policies that match on
	// tags; SPIFFE libraries refuse it (more than one URI SAN).
	SVIDFormatKuma = "kuma"
	// DefaultSVIDFormat applies when mtls.svidFormat is not set. Nothing in
	// a meshca deployment reads kuma:// SANs (they feed Kuma's tag-based
	// traffic permissions, which meshca does not generate), while SPIFFE
	// consumers refuse certificates that have them.
	DefaultSVIDFormat = SVIDFormatSPIFFE
)

// SVID returns the format of the Mesh's data-plane certificates.
func (m *Mesh) SVID() string {
	if m == nil || m.MTLS == nil || m.MTLS.SVIDFormat == "" {
		return DefaultSVIDFormat
	}
	return m.MTLS.SVIDFormat
}

func validateSVIDFormat(v *ValidationError, path, f string) {
	if f != "" && f != SVIDFormatSPIFFE && f != SVIDFormatKuma {
		v.Addf(path, "unknown format %q: must be %s (one URI SAN, SPIFFE-conformant) or %s (Kuma's: kuma:// tag SANs too)", f, SVIDFormatSPIFFE, SVIDFormatKuma)
	}
}
