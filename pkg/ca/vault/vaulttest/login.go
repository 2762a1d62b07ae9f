package vaulttest

// Auth methods: token lookup and renewal, cert and AWS (IAM, EC2) logins.

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

func (s *Server) tokenData(id string, tok *token) map[string]any {
	ttl := 0
	expire := any(nil)
	if !tok.expiry.IsZero() {
		ttl = int(tok.expiry.Sub(s.now()).Round(time.Second) / time.Second)
		expire = tok.expiry.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"accessor":         "acc." + id[len(id)-6:],
		"creation_time":    tok.created.Unix(),
		"creation_ttl":     int(tok.creationTTL / time.Second),
		"display_name":     "token",
		"entity_id":        "",
		"expire_time":      expire,
		"explicit_max_ttl": 0,
		"id":               id,
		"issue_time":       tok.created.UTC().Format(time.RFC3339Nano),
		"meta":             nil,
		"num_uses":         0,
		"orphan":           false,
		"path":             "auth/token/create",
		"policies":         tok.policies,
		"renewable":        tok.renewable,
		"ttl":              ttl,
		"type":             "service",
	}
}

func (s *Server) lookupSelf(w http.ResponseWriter, r *http.Request) {
	id, tok, good := s.auth(w, r, PolicyDefault, PolicyPKI)
	if !good {
		return
	}
	s.mu.Lock()
	data := s.tokenData(id, tok)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Data: data, MountType: "token"})
}

func (s *Server) renewSelf(w http.ResponseWriter, r *http.Request) {
	id, tok, good := s.auth(w, r, PolicyDefault, PolicyPKI)
	if !good {
		return
	}
	body, good := readBody(w, r)
	if !good {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !tok.renewable || tok.expiry.IsZero() {
		writeErr(w, http.StatusBadRequest, "lease is not renewable")
		return
	}
	ttl := tok.creationTTL
	if inc, err := parseTTL(str(body, "increment")); err == nil && inc > 0 {
		ttl = inc
	}
	now := s.now()
	exp := now.Add(ttl)
	var warnings []string
	if !tok.explicitMax.IsZero() && exp.After(tok.explicitMax) {
		exp = tok.explicitMax
		warnings = append(warnings, "TTL of \""+ttl.String()+"\" exceeded the effective max_ttl of \""+tok.explicitMax.Sub(now).Round(time.Second).String()+"\"; TTL value is capped accordingly")
	}
	tok.expiry = exp
	tok.renewals++
	s.renewals++
	lease := int(exp.Sub(now).Round(time.Second) / time.Second)
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Warnings: warnings, Auth: &authInfo{
		ClientToken: id, Accessor: "acc." + id[len(id)-6:], Policies: tok.policies, TokenPolicies: tok.policies,
		LeaseDuration: lease, Renewable: lease > 0, TokenType: "service",
	}})
}

func (s *Server) login(w http.ResponseWriter, meta map[string]string) {
	id := s.CreateToken(TokenOptions{Policies: []string{PolicyDefault, PolicyPKI}, TTL: s.opts.LoginTTL, Renewable: true})
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Auth: &authInfo{
		ClientToken: id, Accessor: "acc." + id[len(id)-6:], Policies: []string{PolicyDefault, PolicyPKI},
		TokenPolicies: []string{PolicyDefault, PolicyPKI}, Metadata: meta,
		LeaseDuration: int(s.opts.LoginTTL / time.Second), Renewable: true, TokenType: "service",
	}})
}

func (s *Server) certLogin(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeErr(w, http.StatusBadRequest, "invalid certificate or no client certificate supplied")
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.clientPool, Intermediates: inter, CurrentTime: s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid certificate or no client certificate supplied")
		return
	}
	s.login(w, map[string]string{"cert_name": "meshca", "common_name": leaf.Subject.CommonName})
}

func (s *Server) awsLogin(w http.ResponseWriter, r *http.Request) {
	body, good := readBody(w, r)
	if !good {
		return
	}
	if pkcs7 := str(body, "pkcs7"); pkcs7 != "" {
		s.ec2Login(w, AWSLogin{Role: str(body, "role"), PKCS7: pkcs7, Nonce: str(body, "nonce")})
		return
	}
	method := str(body, "iam_http_request_method")
	if method == "" {
		writeErr(w, http.StatusBadRequest, "missing iam_http_request_method")
		return
	}
	dec := func(k string) ([]byte, bool) {
		b, err := base64.StdEncoding.DecodeString(str(body, k))
		if err != nil || len(b) == 0 {
			writeErr(w, http.StatusBadRequest, "failed to base64 decode "+k)
			return nil, false
		}
		return b, true
	}
	u, good := dec("iam_request_url")
	if !good {
		return
	}
	reqBody, good := dec("iam_request_body")
	if !good {
		return
	}
	hdrJSON, good := dec("iam_request_headers")
	if !good {
		return
	}
	var hdr http.Header
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		writeErr(w, http.StatusBadRequest, "failed to parse iam_request_headers: "+err.Error())
		return
	}
	m := credentialRe.FindStringSubmatch(hdr.Get("Authorization"))
	if !strings.HasPrefix(hdr.Get("Authorization"), "AWS4-HMAC-SHA256 ") || m == nil {
		writeErr(w, http.StatusBadRequest, "error parsing iam_request_headers: missing or invalid Authorization header")
		return
	}
	login := AWSLogin{
		Role: str(body, "role"), Method: method, URL: string(u), Body: string(reqBody),
		AccessKeyID: m[1], ServerID: hdr.Get("X-Vault-AWS-IAM-Server-ID"), Headers: hdr,
	}
	s.mu.Lock()
	s.awsLogins = append(s.awsLogins, login)
	s.mu.Unlock()
	if s.opts.AWSServerID != "" && login.ServerID != s.opts.AWSServerID {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("expected %q but got %q", s.opts.AWSServerID, login.ServerID))
		return
	}
	if login.Role != s.opts.AWSRole {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("entry for role %q not found", login.Role))
		return
	}
	s.login(w, map[string]string{"role": login.Role, "client_user_id": login.AccessKeyID})
}

// ec2Login accepts an EC2 login whose document is Options.AWSPKCS7 and
// whose role is Options.AWSRole. Like Vault, it binds the instance to the
// first nonce it sees and refuses another one.
func (s *Server) ec2Login(w http.ResponseWriter, login AWSLogin) {
	s.mu.Lock()
	s.awsLogins = append(s.awsLogins, login)
	first := s.ec2Nonce == ""
	if first {
		s.ec2Nonce = login.Nonce
	}
	nonce := s.ec2Nonce
	s.mu.Unlock()
	switch {
	case login.PKCS7 != s.opts.AWSPKCS7:
		writeErr(w, http.StatusBadRequest, "failed to verify the signature of the instance identity document")
	case login.Nonce == "" || login.Nonce != nonce:
		writeErr(w, http.StatusBadRequest, "client nonce mismatch")
	case login.Role != s.opts.AWSRole:
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("entry for role %q not found", login.Role))
	default:
		s.login(w, map[string]string{"role": login.Role, "instance_id": "i-0meshca"})
	}
}

// credentialRe takes the access key ID out of a SigV4 Authorization header.
var credentialRe = regexp.MustCompile(`Credential=([A-Z0-9]+)/`)
