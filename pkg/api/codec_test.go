package api

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSeedExamplesParseAndValidate(t *testing.T) {
	for _, tc := range []struct {
		file       string
		form       Form
		expiration time.Duration
	}{
		{"../../examples/acmpca/mesh-kubernetes.yaml", FormKubernetes, 24 * time.Hour},
		{"../../examples/acmpca/mesh-universal.yaml", FormUniversal, 24 * time.Hour},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			docs, err := DecodeDocuments(data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(docs) != 1 || docs[0].Form != tc.form {
				t.Fatalf("got %d docs, form %v", len(docs), docs[0].Form)
			}
			m, ok := docs[0].Resource.(*Mesh)
			if !ok {
				t.Fatalf("got %T, want *Mesh", docs[0].Resource)
			}
			if err := m.Validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			b, _, ok := m.EnabledMTLSBackend()
			if !ok || b.Name != "acmpca-1" || b.Type != BackendACMPCA {
				t.Fatalf("enabled backend = %+v", b)
			}
			if got := b.CertExpiration(); got != tc.expiration {
				t.Errorf("expiration = %v, want %v", got, tc.expiration)
			}
			if m.Name != "default" {
				t.Errorf("name = %q", m.Name)
			}
			if !strings.Contains(string(b.Conf), `"arn":"arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012"`) {
				t.Errorf("conf lost the arn: %s", b.Conf)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1d": 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute, "2d12h": 60 * time.Hour, "10s": 10 * time.Second,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1x", "d", "-1h", "0s", "1.5d", "abc", "1d-2d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestMultiDocumentAndForms(t *testing.T) {
	in := `
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
---
# a comment-only document is skipped
---
apiVersion: v1
kind: Secret
metadata:
  name: sec-1
  namespace: kong-mesh-system
  labels:
    kuma.io/mesh: default
data:
  value: aGVsbG8=
type: system.kuma.io/secret
---
{"type": "Dataplane", "mesh": "default", "name": "backend-1", "networking": {"address": "127.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "backend"}}]}}
---
apiVersion: v1
kind: Secret
metadata: {name: gs}
data: {value: aGVsbG8=}
type: system.kuma.io/global-secret
`
	docs, err := DecodeDocuments([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 4 {
		t.Fatalf("got %d documents", len(docs))
	}
	sec := docs[1].Resource.(*Secret)
	if sec.Mesh != "default" || sec.Name != "sec-1" || sec.Data != "aGVsbG8=" {
		t.Errorf("secret = %+v", sec)
	}
	dp := docs[2].Resource.(*Dataplane)
	if got := dp.Services(); len(got) != 1 || got[0] != "backend" {
		t.Errorf("services = %v", got)
	}
	if _, ok := docs[3].Resource.(*GlobalSecret); !ok {
		t.Errorf("doc 4 = %T", docs[3].Resource)
	}
	for _, d := range docs {
		if err := d.Resource.Validate(); err != nil {
			t.Errorf("document %d: %v", d.Index, err)
		}
	}
}

const goodBackend = `
type: Mesh
name: default
mtls:
  enabledBackend: b
  backends:
  - name: b
    type: builtin
`

// TestBadInput asserts that each bad document is refused with an error
// naming the field at fault.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, in, field, msg string
	}{
		{"bad duration", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    dpCert: {rotation: {expiration: 1x}}", 1), "mtls.backends[0].dpCert.rotation.expiration", "invalid duration"},
		{"negative duration", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    dpCert: {rotation: {expiration: -1h}}", 1), "mtls.backends[0].dpCert.rotation.expiration", "positive"},
		{"bad request timeout", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    dpCert: {requestTimeout: soon}", 1), "mtls.backends[0].dpCert.requestTimeout", "invalid duration"},
		{"bad root chain timeout", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    rootChain: {requestTimeout: 5q}", 1), "mtls.backends[0].rootChain.requestTimeout", "invalid duration"},
		{"unknown backend type", strings.Replace(goodBackend, "type: builtin", "type: magic", 1), "mtls.backends[0].type", `unknown backend type "magic"`},
		{"empty backend type", strings.Replace(goodBackend, "type: builtin", "type: \"\"", 1), "mtls.backends[0].type", "must not be empty"},
		{"enabledBackend missing", strings.Replace(goodBackend, "enabledBackend: b", "enabledBackend: other", 1), "mtls.enabledBackend", `"other" is not among`},
		{"duplicate backend names", goodBackend + "  - name: b\n    type: provided\n", "mtls.backends[1].name", "duplicate backend name"},
		{"empty backend name", strings.Replace(goodBackend, "- name: b", "- name: \"\"", 1), "mtls.backends[0].name", "must not be empty"},
		{"bad mode", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    mode: LOOSE", 1), "mtls.backends[0].mode", "unknown mode"},
		{"bad key type", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    dpCert: {keyType: DSA}", 1), "mtls.backends[0].dpCert.keyType", "unknown key type"},
		{"conf not an object", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    conf: [1, 2]", 1), "mtls.backends[0].conf", "must be an object"},
		{"unknown mesh field", goodBackend + "colour: blue\n", "colour", "unknown field"},
		{"unknown backend field", strings.Replace(goodBackend, "type: builtin", "type: builtin\n    flavour: x", 1), "mtls.backends[0].flavour", "unknown field"},
		{"unknown k8s spec field", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  mtlsx: {}\n", "spec.mtlsx", "unknown field"},
		{"wrong apiVersion", "apiVersion: kuma.io/v1\nkind: Mesh\nmetadata: {name: m}\nspec: {}\n", "apiVersion", `must be "kuma.io/v1alpha1"`},
		{"wrong secret apiVersion", "apiVersion: kuma.io/v1alpha1\nkind: Secret\nmetadata: {name: s}\ndata: {value: aGk=}\ntype: system.kuma.io/secret\n", "apiVersion", `must be "v1"`},
		{"unsupported kind", "apiVersion: kuma.io/v1alpha1\nkind: Zone\nmetadata: {name: z}\n", "kind", "unsupported kind"},
		{"missing type", "name: x\nmtls: {}\n", "type", "must be set"},
		{"unknown type", "type: Meshy\nname: x\n", "type", "unknown resource type"},
		{"missing k8s name", "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {}\nspec: {}\n", "metadata.name", "must not be empty"},
		{"bad name", "type: Mesh\nname: -bad-\n", "name", "not a valid name"},
		{"secret wrong base64", "type: Secret\nmesh: default\nname: s\ndata: '!!notbase64'\n", "data", "base64"},
		{"k8s secret wrong type", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {value: aGk=}\ntype: Opaque\n", "type", "system.kuma.io/secret"},
		{"k8s secret no value", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {other: aGk=}\ntype: system.kuma.io/secret\n", "data.other", "unknown key"},
		{"secret without mesh", "type: Secret\nname: s\ndata: aGk=\n", "mesh", "must not be empty"},
		{"global secret with mesh", "type: GlobalSecret\nmesh: default\nname: s\ndata: aGk=\n", "mesh", "must be empty"},
		{"dataplane no service tag", "type: Dataplane\nmesh: default\nname: d\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 80\n    tags: {version: v1}\n", "networking.inbound[0].tags", `"kuma.io/service" is required`},
		{"dataplane bad port", "type: Dataplane\nmesh: default\nname: d\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 70000\n    tags: {kuma.io/service: a}\n", "networking.inbound[0].port", "1..65535"},
		{"dataplane no address", "type: Dataplane\nmesh: default\nname: d\nnetworking:\n  inbound:\n  - port: 80\n    tags: {kuma.io/service: a}\n", "networking.address", "must not be empty"},
		{"dataplane no inbound", "type: Dataplane\nmesh: default\nname: d\nnetworking: {address: 1.2.3.4}\n", "networking", "at least one inbound"},
		{"wrong field type", "type: Mesh\nname: m\nmtls: {enabledBackend: 5, backends: {}}\n", "mtls.backends", "must be"},
		{"duplicate yaml key", "type: Mesh\nname: a\nname: b\n", "name", "duplicate key"},
		{"not an object", "- a\n- b\n", "", "must be a YAML or JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeAndValidate(tc.in)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if tc.field == "" {
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %q is no ValidationError", err)
			}
			for _, c := range ve.Causes {
				if c.Field == tc.field {
					return
				}
			}
			t.Errorf("error %q does not name field %q", err, tc.field)
		})
	}
}

func decodeAndValidate(in string) error {
	docs, err := DecodeDocuments([]byte(in))
	if err != nil {
		return err
	}
	for _, d := range docs {
		if err := d.Resource.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func TestValidateDataSource(t *testing.T) {
	for _, tc := range []struct {
		ds   *DataSource
		want string
	}{
		{&DataSource{}, "got none"},
		{&DataSource{Secret: "a", File: "/b"}, "got 2"},
		{&DataSource{Inline: "***"}, "conf.caCert.inline: not valid base64"},
		{nil, "must be set"},
	} {
		v := &ValidationError{}
		ValidateDataSource(v, "conf.caCert", tc.ds, true)
		if err := v.OrNil(); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "conf.caCert") {
			t.Errorf("%+v: %v, want %q", tc.ds, err, tc.want)
		}
	}
	v := &ValidationError{}
	ValidateDataSource(v, "x", &DataSource{InlineString: "abc"}, true)
	if v.OrNil() != nil {
		t.Error(v)
	}
}
