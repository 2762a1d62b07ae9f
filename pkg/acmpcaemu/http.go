package acmpcaemu

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	randv2 "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// AdminPrefix is the path prefix of the emulator's admin API.
const AdminPrefix = "/_acmpca-local/"

// call is one decoded API request.
type call struct {
	proto protocol
	body  []byte
	// region is the region of the request's signature scope, if any.
	region string
}

func (c call) decode(v any) error { return c.proto.decode(c.body, v) }

type opHandler func(ctx context.Context, c call) (any, error)

// Handler returns the HTTP handler serving both API protocols and the admin
// API:
//
//	GET  /_acmpca-local/stats   counters, see [Stats]
//	GET  /_acmpca-local/faults  current faults
//	POST /_acmpca-local/faults  {"errorRate":0.1,"latency":"50ms","outageFor":"5s"}
//	GET  /_acmpca-local/rates   per-operation rates
//	POST /_acmpca-local/rates   {"IssueCertificate":5}
//	POST /_acmpca-local/cas     a CASpec as JSON; answers the chain PEM
//	GET  /_acmpca-local/healthz
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"stats", s.adminStats)
	mux.HandleFunc("GET "+AdminPrefix+"faults", s.adminGetFaults)
	mux.HandleFunc("POST "+AdminPrefix+"faults", s.adminSetFaults)
	mux.HandleFunc("GET "+AdminPrefix+"rates", s.adminGetRates)
	mux.HandleFunc("POST "+AdminPrefix+"rates", s.adminSetRates)
	mux.HandleFunc("POST "+AdminPrefix+"cas", s.adminAddCA)
	mux.HandleFunc("GET "+AdminPrefix+"healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", s.serveAPI)
	return mux
}

// newRequestID makes a random UUID (version 4) like AWS request ids.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// identify determines protocol and operation of an API request.
func identify(r *http.Request) (protocol, string, *apiError) {
	if op, ok := strings.CutPrefix(r.URL.Path, cborPathPrefix); ok {
		if r.Method != http.MethodPost {
			return protoCBOR, "", newAPIError(codeUnknownOperation, "method %s not allowed", r.Method)
		}
		if r.Header.Get(smithyProtocolHeader) != smithyProtocolRPCv2CBOR {
			return protoCBOR, "", newAPIError(codeSerialization, "missing or invalid %s header", smithyProtocolHeader)
		}
		return protoCBOR, op, nil
	}
	target := r.Header.Get("X-Amz-Target")
	if r.URL.Path != "/" || r.Method != http.MethodPost || target == "" {
		return protoJSON, "", newAPIError(codeUnknownOperation, "no operation at %s %s", r.Method, r.URL.Path)
	}
	op, ok := strings.CutPrefix(target, serviceTargetPrefix)
	if !ok {
		return protoJSON, "", newAPIError(codeUnknownOperation, "unknown target %q", target)
	}
	return protoJSON, op, nil
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(requestIDHeader, newRequestID())
	proto, op, aerr := identify(r)
	if aerr == nil {
		if _, ok := s.handlers[op]; !ok {
			aerr = newAPIError(codeUnknownOperation, "operation %q is not supported by acmpca-local", op)
		}
	}
	if aerr != nil {
		s.count("unknown", proto, aerr.Code)
		proto.writeError(w, aerr)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBodyBytes))
	if err != nil {
		aerr = newAPIError(codeSerialization, "read request body: %v", err)
		s.count(op, proto, aerr.Code)
		proto.writeError(w, aerr)
		return
	}
	out, err := s.handle(r.Context(), proto, op, r, body)
	if err != nil {
		aerr = asAPIError(err)
		level := slog.LevelDebug
		if aerr.Code == codeInternalFailure {
			level = slog.LevelError
		}
		s.log.Log(r.Context(), level, "request failed", "operation", op, "protocol", proto.String(),
			"code", aerr.Code, "message", aerr.Message)
		s.count(op, proto, aerr.Code)
		proto.writeError(w, aerr)
		return
	}
	s.count(op, proto, "ok")
	proto.writeResponse(w, http.StatusOK, out)
}

func (s *Server) count(op string, proto protocol, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.requests[op]
	if m == nil {
		m = map[string]int64{}
		s.requests[op] = m
	}
	m[outcome]++
	s.protocolUses[proto.String()]++
}

// handle applies faults, authentication and rate limits, in the order AWS
// would hit them, before running the operation.
func (s *Server) handle(ctx context.Context, proto protocol, op string, r *http.Request, body []byte) (any, error) {
	faults := s.Faults()
	if faults.Latency > 0 {
		t := time.NewTimer(faults.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("request cancelled: %w", ctx.Err())
		case <-t.C:
		}
	}
	now := s.now()
	if now.Before(faults.OutageUntil) {
		return nil, newAPIError(codeServiceUnavailable, "Service unavailable (emulated outage).")
	}
	region, err := s.authenticate(ctx, r, body)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	allowed := s.limiters[op].AllowN(now, 1)
	s.mu.Unlock()
	if !allowed {
		return nil, newAPIError(codeThrottling, "Rate exceeded")
	}
	if faults.ErrorRate > 0 && randv2.Float64() < faults.ErrorRate {
		return nil, newAPIError(codeServiceUnavailable, "Service unavailable (injected error).")
	}
	return s.handlers[op](ctx, call{proto: proto, body: body, region: region})
}

// sigV4Auth is the parsed Authorization header of a SigV4 request.
type sigV4Auth struct {
	AccessKeyID, Date, Region, Service string
	SignedHeaders                      []string
	Signature                          string
}

func parseSigV4(h string) (sigV4Auth, bool) {
	var a sigV4Auth
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, false
	}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, false
			}
			a.AccessKeyID, a.Date, a.Region, a.Service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.SignedHeaders = strings.Split(v, ";")
		case "Signature":
			a.Signature = v
		}
	}
	return a, a.AccessKeyID != "" && a.Signature != "" && len(a.SignedHeaders) > 0
}

// authenticate verifies the SigV4 signature when credentials are
// configured, by re-signing the received request with the SDK's own signer
// and the configured secret, and returns the signature's region.
func (s *Server) authenticate(ctx context.Context, r *http.Request, body []byte) (string, error) {
	authz := r.Header.Get("Authorization")
	auth, parsed := parseSigV4(authz)
	if parsed {
		s.mu.Lock()
		s.accessKeys[auth.AccessKeyID]++
		s.mu.Unlock()
	}
	if len(s.opts.Credentials) == 0 {
		return auth.Region, nil
	}
	if authz == "" {
		return "", newAPIError(codeMissingAuthentication, "Missing Authentication Token")
	}
	if !parsed {
		return "", newAPIError(codeIncompleteSignature, "Authorization header requires Credential, SignedHeaders and Signature.")
	}
	secret, ok := s.opts.Credentials[auth.AccessKeyID]
	if !ok {
		return "", newAPIError(codeUnrecognizedClient, "The security token included in the request is invalid.")
	}
	signingTime, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", newAPIError(codeIncompleteSignature, "missing or invalid X-Amz-Date header")
	}
	resigned, err := http.NewRequestWithContext(ctx, r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return "", fmt.Errorf("rebuild request for signature check: %w", err)
	}
	resigned.Host = r.Host
	for _, h := range auth.SignedHeaders {
		switch h {
		case "host":
		case "content-length":
			resigned.ContentLength = int64(len(body))
		default:
			resigned.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	// A client may sign an explicit payload hash (S3-style); honour it, but
	// only if it is the real one or explicitly unsigned.
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" {
		if h != payloadHash && h != "UNSIGNED-PAYLOAD" {
			return "", newAPIError(codeInvalidSignature, "The provided X-Amz-Content-Sha256 header does not match the request body.")
		}
		payloadHash = h
	}
	creds := aws.Credentials{
		AccessKeyID:     auth.AccessKeyID,
		SecretAccessKey: secret,
		SessionToken:    r.Header.Get("X-Amz-Security-Token"),
	}
	if err := s.signer.SignHTTP(ctx, creds, resigned, payloadHash, auth.Service, auth.Region, signingTime); err != nil {
		return "", fmt.Errorf("re-sign request: %w", err)
	}
	want, ok := parseSigV4(resigned.Header.Get("Authorization"))
	if !ok || !hmac.Equal([]byte(want.Signature), []byte(auth.Signature)) {
		return "", newAPIError(codeInvalidSignature,
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return auth.Region, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func (s *Server) adminStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// faultsView is the admin API form of Faults: durations as Go duration
// strings, the outage as a duration from now.
type faultsView struct {
	ErrorRate   *float64 `json:"errorRate,omitempty"`
	Latency     *string  `json:"latency,omitempty"`
	OutageFor   *string  `json:"outageFor,omitempty"`
	OutageUntil string   `json:"outageUntil,omitempty"`
}

func (s *Server) faultsView() faultsView {
	f := s.Faults()
	lat := f.Latency.String()
	v := faultsView{ErrorRate: &f.ErrorRate, Latency: &lat}
	if now := s.now(); now.Before(f.OutageUntil) {
		left := f.OutageUntil.Sub(now).String()
		v.OutageFor = &left
		v.OutageUntil = f.OutageUntil.UTC().Format(time.RFC3339Nano)
	}
	return v
}

func (s *Server) adminGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.faultsView())
}

// adminSetFaults updates only the fields present in the request body.
func (s *Server) adminSetFaults(w http.ResponseWriter, r *http.Request) {
	var v faultsView
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&v); err != nil {
		adminError(w, http.StatusBadRequest, fmt.Errorf("decode faults: %w", err))
		return
	}
	f := s.Faults()
	if v.ErrorRate != nil {
		if *v.ErrorRate < 0 || *v.ErrorRate > 1 {
			adminError(w, http.StatusBadRequest, fmt.Errorf("errorRate %v outside [0,1]", *v.ErrorRate))
			return
		}
		f.ErrorRate = *v.ErrorRate
	}
	if v.Latency != nil {
		d, err := time.ParseDuration(*v.Latency)
		if err != nil || d < 0 {
			adminError(w, http.StatusBadRequest, fmt.Errorf("invalid latency %q", *v.Latency))
			return
		}
		f.Latency = d
	}
	if v.OutageFor != nil {
		d, err := time.ParseDuration(*v.OutageFor)
		if err != nil || d < 0 {
			adminError(w, http.StatusBadRequest, fmt.Errorf("invalid outageFor %q", *v.OutageFor))
			return
		}
		f.OutageUntil = time.Time{}
		if d > 0 {
			f.OutageUntil = s.now().Add(d)
		}
	}
	s.SetFaults(f)
	s.log.InfoContext(r.Context(), "faults updated", "error_rate", f.ErrorRate, "latency", f.Latency, "outage_until", f.OutageUntil)
	writeJSON(w, http.StatusOK, s.faultsView())
}

func (s *Server) adminGetRates(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Rates())
}

func (s *Server) adminSetRates(w http.ResponseWriter, r *http.Request) {
	var v map[string]float64
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&v); err != nil {
		adminError(w, http.StatusBadRequest, fmt.Errorf("decode rates: %w", err))
		return
	}
	for op := range v {
		if _, ok := s.handlers[op]; !ok {
			adminError(w, http.StatusBadRequest, fmt.Errorf("unknown operation %q", op))
			return
		}
	}
	for op, perSecond := range v {
		_ = s.SetRate(op, perSecond) // validated above
	}
	s.log.InfoContext(r.Context(), "rates updated", "rates", v)
	writeJSON(w, http.StatusOK, s.Rates())
}

func (s *Server) adminAddCA(w http.ResponseWriter, r *http.Request) {
	var spec CASpec
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&spec); err != nil {
		adminError(w, http.StatusBadRequest, fmt.Errorf("decode CA spec: %w", err))
		return
	}
	info, err := s.AddCA(r.Context(), spec)
	if err != nil {
		adminError(w, http.StatusBadRequest, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(info.ChainPEM)
}
