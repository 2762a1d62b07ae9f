package acmpcaemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Error codes used by the emulator. Codes of errors modelled by the ACM PCA
// API (and therefore known to the SDK's type registry) are listed in
// modeledErrors; the rest are the generic AWS service errors.
const (
	codeInvalidArgs            = "InvalidArgsException"
	codeInvalidArn             = "InvalidArnException"
	codeInvalidNextToken       = "InvalidNextTokenException"
	codeInvalidRequest         = "InvalidRequestException"
	codeInvalidState           = "InvalidStateException"
	codeLimitExceeded          = "LimitExceededException"
	codeMalformedCertificate   = "MalformedCertificateException"
	codeMalformedCSR           = "MalformedCSRException"
	codeCertificateMismatch    = "CertificateMismatchException"
	codeRequestAlreadyDone     = "RequestAlreadyProcessedException"
	codeRequestInProgress      = "RequestInProgressException"
	codeResourceNotFound       = "ResourceNotFoundException"
	codeValidation             = "ValidationException"
	codeThrottling             = "ThrottlingException"
	codeIdempotency            = "IdempotencyException"
	codeServiceUnavailable     = "ServiceUnavailable"
	codeInternalFailure        = "InternalFailure"
	codeUnrecognizedClient     = "UnrecognizedClientException"
	codeInvalidSignature       = "InvalidSignatureException"
	codeMissingAuthentication  = "MissingAuthenticationTokenException"
	codeIncompleteSignature    = "IncompleteSignatureException"
	codeSerialization          = "SerializationException"
	codeUnknownOperation       = "UnknownOperationException"
	modeledErrorNamespace      = "com.amazonaws.acmpca#"
	serviceTargetPrefix        = "ACMPrivateCA."
	cborPathPrefix             = "/service/ACMPrivateCA/operation/"
	contentTypeJSON11          = "application/x-amz-json-1.1"
	contentTypeCBOR            = "application/cbor"
	smithyProtocolHeader       = "Smithy-Protocol"
	smithyProtocolRPCv2CBOR    = "rpc-v2-cbor"
	requestIDHeader            = "X-Amzn-Requestid"
	errorTypeHeader            = "X-Amzn-ErrorType"
	maxRequestBodyBytes        = 1 << 20
	certificateAuthorityPrefix = "certificate-authority/"
)

// isModeledError reports whether code is an exception shape of the ACM PCA
// model. In RPC v2 CBOR their __type carries the model namespace, as AWS
// sends it.
func isModeledError(code string) bool {
	switch code {
	case codeCertificateMismatch, "ConcurrentModificationException", codeInvalidArgs,
		codeInvalidArn, codeInvalidNextToken, "InvalidPolicyException", codeInvalidRequest,
		codeInvalidState, "InvalidTagException", codeLimitExceeded, "LockoutPreventedException",
		codeMalformedCertificate, codeMalformedCSR, "PermissionAlreadyExistsException",
		codeRequestAlreadyDone, "RequestFailedException", codeRequestInProgress,
		codeResourceNotFound, "TooManyTagsException":
		return true
	}
	return false
}

// apiError is an error answered to the client in the protocol's error shape.
type apiError struct {
	Code    string
	Message string
	Status  int
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newAPIError(code, format string, args ...any) *apiError {
	status := http.StatusBadRequest
	switch code {
	case codeServiceUnavailable:
		status = http.StatusServiceUnavailable
	case codeInternalFailure:
		status = http.StatusInternalServerError
	case codeUnknownOperation:
		status = http.StatusNotFound
	}
	return &apiError{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// asAPIError maps any error to the one answered to the client; errors that
// are not API errors are internal failures.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return newAPIError(codeInternalFailure, "internal failure: %v", err)
}

// protocol identifies the wire protocol of one request.
type protocol int

const (
	protoJSON protocol = iota + 1
	protoCBOR
)

func (p protocol) String() string {
	if p == protoCBOR {
		return "rpcv2Cbor"
	}
	return "awsJson1_1"
}

// decode unmarshals a request body. The same Go structs serve both
// protocols: fxamacker/cbor falls back to the json struct tags, blobs are
// base64 strings in JSON and byte strings in CBOR.
func (p protocol) decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var err error
	if p == protoCBOR {
		err = cbor.Unmarshal(body, v)
	} else {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		return newAPIError(codeSerialization, "cannot decode %s request body: %v", p, err)
	}
	return nil
}

func (p protocol) writeResponse(w http.ResponseWriter, status int, v any) {
	var (
		body []byte
		err  error
	)
	if p == protoCBOR {
		body, err = cbor.Marshal(v)
		w.Header().Set("Content-Type", contentTypeCBOR)
		w.Header().Set(smithyProtocolHeader, smithyProtocolRPCv2CBOR)
	} else {
		body, err = json.Marshal(v)
		w.Header().Set("Content-Type", contentTypeJSON11)
	}
	if err != nil {
		// Encoding our own response types cannot fail short of a bug.
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

type errorBody struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

func (p protocol) writeError(w http.ResponseWriter, e *apiError) {
	typ := e.Code
	if p == protoCBOR && isModeledError(e.Code) {
		typ = modeledErrorNamespace + e.Code
	}
	w.Header().Set(errorTypeHeader, e.Code)
	p.writeResponse(w, e.Status, errorBody{Type: typ, Message: e.Message})
}

// epochTime is a timestamp in the wire form both protocols use: epoch
// seconds as a JSON number, or CBOR tag 1 around a float (what the SDK's
// CBOR codec writes and expects).
type epochTime struct{ time.Time }

func newEpochTime(t time.Time) *epochTime {
	if t.IsZero() {
		return nil
	}
	return &epochTime{t}
}

func (t epochTime) seconds() float64 { return float64(t.UnixMilli()) / 1e3 }

// MarshalJSON implements json.Marshaler.
func (t epochTime) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, t.seconds(), 'f', -1, 64), nil
}

// MarshalCBOR implements cbor.Marshaler.
func (t epochTime) MarshalCBOR() ([]byte, error) {
	return cbor.Marshal(cbor.Tag{Number: 1, Content: t.seconds()})
}
