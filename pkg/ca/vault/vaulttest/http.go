package vaulttest

// The HTTP side: routing, Vault's response envelope and errors, token checks.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
)

type reply struct {
	RequestID     string         `json:"request_id"`
	LeaseID       string         `json:"lease_id"`
	Renewable     bool           `json:"renewable"`
	LeaseDuration int            `json:"lease_duration"`
	Data          map[string]any `json:"data"`
	WrapInfo      any            `json:"wrap_info"`
	Warnings      []string       `json:"warnings"`
	Auth          *authInfo      `json:"auth"`
	MountType     string         `json:"mount_type"`
}

type authInfo struct {
	ClientToken   string            `json:"client_token"`
	Accessor      string            `json:"accessor"`
	Policies      []string          `json:"policies"`
	TokenPolicies []string          `json:"token_policies"`
	Metadata      map[string]string `json:"metadata"`
	LeaseDuration int               `json:"lease_duration"`
	Renewable     bool              `json:"renewable"`
	EntityID      string            `json:"entity_id"`
	TokenType     string            `json:"token_type"`
	Orphan        bool              `json:"orphan"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, msgs ...string) {
	writeJSON(w, status, map[string][]string{"errors": msgs})
}

func ok(w http.ResponseWriter, mountType string, data map[string]any, warnings []string) {
	writeJSON(w, http.StatusOK, reply{RequestID: uuid(), Data: data, Warnings: warnings, MountType: mountType})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		writeErr(w, http.StatusNotFound)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/v1/")
	ns := strings.Trim(r.Header.Get("X-Vault-Namespace"), "/")
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: p, Namespace: r.Header.Get("X-Vault-Namespace")})
	s.mu.Unlock()
	full := strings.Trim(path.Join(ns, p), "/")
	rel, inNS := full, s.opts.Namespace == ""
	if s.opts.Namespace != "" && strings.HasPrefix(full, s.opts.Namespace+"/") {
		rel, inNS = strings.TrimPrefix(full, s.opts.Namespace+"/"), true
	}
	write := r.Method == http.MethodPost || r.Method == http.MethodPut
	read := r.Method == http.MethodGet
	mount := s.opts.Mount + "/"
	switch {
	case rel == "auth/token/lookup-self" && (read || write):
		s.lookupSelf(w, r)
	case rel == "auth/token/renew-self" && write:
		s.renewSelf(w, r)
	case inNS && rel == "auth/cert/login" && write:
		s.certLogin(w, r)
	case inNS && rel == "auth/aws/login" && write:
		s.awsLogin(w, r)
	case inNS && rel == mount+"ca_chain" && read:
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		_, _ = w.Write(s.chainPEM())
	case inNS && rel == mount+"cert/ca_chain" && read:
		ok(w, "pki", map[string]any{"certificate": string(s.chainPEM()), "revocation_time": 0}, nil)
	case inNS && strings.HasPrefix(rel, mount+"issue/") && write:
		s.issue(w, r, strings.TrimPrefix(rel, mount+"issue/"), false)
	case inNS && strings.HasPrefix(rel, mount+"sign/") && write:
		s.issue(w, r, strings.TrimPrefix(rel, mount+"sign/"), true)
	case r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodDelete && r.Method != "LIST":
		writeErr(w, http.StatusMethodNotAllowed, "unsupported operation")
	default:
		writeErr(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", full))
	}
}

// chainPEM is the mount's chain, issuer first.
func (s *Server) chainPEM() []byte {
	out := encodeCert(s.issuer)
	if s.issuer != s.root && !s.opts.ExternalRoot {
		out = append(out, encodeCert(s.root)...)
	}
	return out
}

// auth returns the caller's token, or writes 403.
func (s *Server) auth(w http.ResponseWriter, r *http.Request, allowed ...string) (string, *token, bool) {
	id := r.Header.Get("X-Vault-Token")
	s.mu.Lock()
	tok := s.tokens[id]
	s.mu.Unlock()
	if tok == nil || (!tok.expiry.IsZero() && !s.now().Before(tok.expiry)) {
		writeErr(w, http.StatusForbidden, "permission denied")
		return "", nil, false
	}
	if slices.Contains(tok.policies, PolicyRoot) {
		return id, tok, true
	}
	for _, p := range allowed {
		if slices.Contains(tok.policies, p) {
			return id, tok, true
		}
	}
	writeErr(w, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
	return "", nil, false
}

func readBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	body := map[string]any{}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil && err.Error() != "EOF" {
		writeErr(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
		return nil, false
	}
	return body, true
}

func str(body map[string]any, k string) string {
	switch v := body[k].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}
