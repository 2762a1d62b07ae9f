package api

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Duplicate JSON keys are refused at every level, naming the key by its
// path, as duplicate YAML keys are: a key given twice is a mistake whose
// outcome (last wins in encoding/json, first wins elsewhere) the writer
// did not choose.
func TestDuplicateKeysAreRefused(t *testing.T) {
	tests := []struct {
		name, in, field string
	}{
		{"top level", `{"type":"Mesh","name":"a","name":"b"}`, "name"},
		{"mtls", `{"type":"Mesh","name":"a","mtls":{"enabledBackend":"x","enabledBackend":"y"}}`, "mtls.enabledBackend"},
		{"backend in list", `{"type":"Mesh","name":"a","mtls":{"backends":[{"name":"x","type":"builtin"},{"name":"y","type":"builtin","type":"provided"}]}}`, "mtls.backends[1].type"},
		{"conf block", `{"type":"Mesh","name":"a","mtls":{"backends":[{"name":"x","type":"acmpca","conf":{"arn":"a","arn":"b"}}]}}`, "mtls.backends[0].conf.arn"},
		{"deep in conf", `{"type":"Mesh","name":"a","mtls":{"backends":[{"name":"x","type":"vault","conf":{"fromCp":{"auth":{"token":{"secret":"s1","secret":"s2"}}}}}]}}`, "mtls.backends[0].conf.fromCp.auth.token.secret"},
		{"tag", `{"type":"Dataplane","mesh":"m","name":"d","networking":{"address":"1.2.3.4","inbound":[{"port":1,"tags":{"kuma.io/service":"a","kuma.io/service":"b"}}]}}`, `networking.inbound[0].tags["kuma.io/service"]`},
		{"secret data", `{"type":"Secret","mesh":"m","name":"s","data":"YQ==","data":"Yg=="}`, "data"},
		{"plain tag name", `{"type":"Dataplane","mesh":"m","name":"d","networking":{"address":"1.2.3.4","inbound":[{"port":1,"tags":{"kuma.io/service":"a","version":"1","version":"2"}}]}}`, `networking.inbound[0].tags["version"]`},
		{"escaped spelling", `{"type":"Mesh","name":"a","n\u0061me":"b"}`, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeUniversal([]byte(tt.in))
			if err == nil {
				t.Fatalf("decoded without an error")
			}
			fields := Fields(err)
			if len(fields) == 0 || fields[0] != tt.field {
				t.Fatalf("fields %q, want %q first (%v)", fields, tt.field, err)
			}
			if !strings.Contains(err.Error(), "duplicate key") {
				t.Fatalf("error %q does not say duplicate key", err)
			}
		})
	}
	// The same key in different objects is no duplicate.
	ok := `{"type":"Mesh","name":"a","mtls":{"enabledBackend":"x","backends":[{"name":"x","type":"builtin"},{"name":"y","type":"builtin"}]}}`
	if _, err := DecodeUniversal([]byte(ok)); err != nil {
		t.Fatalf("%s: %v", ok, err)
	}
	// Backends decode their conf with DecodeStrict: it refuses them too.
	var conf struct {
		A struct {
			B int `json:"b"`
		} `json:"a"`
	}
	err := DecodeStrict([]byte(`{"a":{"b":1,"b":2}}`), &conf, "conf")
	if f := Fields(err); len(f) != 1 || f[0] != "conf.a.b" {
		t.Fatalf("DecodeStrict: fields %q, want conf.a.b (%v)", f, err)
	}
	// YAML, and JSON read as YAML (meshctl apply -f), name the path too.
	for in, field := range map[string]string{
		"type: Mesh\nname: a\nname: b\n": "name",
		"type: Mesh\nname: a\nmtls:\n  backends:\n  - name: x\n    type: builtin\n    conf: {caCert: {RSAbits: 2048, RSAbits: 4096}}\n": "mtls.backends[0].conf.caCert.RSAbits",
		"type: Dataplane\nmesh: m\nname: d\nnetworking:\n  inbound:\n  - tags:\n      kuma.io/service: a\n      kuma.io/service: b\n":   `networking.inbound[0].tags["kuma.io/service"]`,
		`{"type":"Mesh","name":"a","mtls":{"enabledBackend":"x","enabledBackend":"y"}}`:                                                 "mtls.enabledBackend",
		"apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: a}\nspec:\n  mtls: {enabledBackend: x, enabledBackend: y}\n":        "spec.mtls.enabledBackend",
	} {
		_, _, err := DecodeOne([]byte(in))
		if f := Fields(err); len(f) == 0 || f[0] != field || !strings.Contains(err.Error(), "duplicate key") {
			t.Errorf("DecodeOne(%q): fields %q, want %q (%v)", in, f, field, err)
		}
	}
}

// FuzzDuplicateKeys: the in-place scanner never panics, stops at any depth,
// and on valid JSON names exactly the duplicates a token-by-token reading
// with encoding/json finds.
func FuzzDuplicateKeys(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}],"b":3}}`, `{"k\u0061":1,"ka":2}`, `[]`, `{}`, `[{"x":"\"}"},{"x":1,"x":null}]`,
		`{"a":"\\","a":true}`, `{"a" : [ 1 , 2 ] , "b" : { } }`, `{"a":1,}`, `{"a"`, strings.Repeat("[", 20000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		got := &ValidationError{}
		DuplicateKeys(got, js, "")
		if !json.Valid(js) {
			return
		}
		want := &ValidationError{}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber()
		var walk func(path string) error
		walk = func(path string) error {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			switch tok {
			case json.Delim('{'):
				seen := map[string]bool{}
				for dec.More() {
					kt, err := dec.Token()
					if err != nil {
						return err
					}
					k := kt.(string)
					p := keyPath(path, k)
					if seen[k] {
						want.Addf(p, "dup")
					}
					seen[k] = true
					if err := walk(p); err != nil {
						return err
					}
				}
				_, err = dec.Token()
				return err
			case json.Delim('['):
				for i := 0; dec.More(); i++ {
					if err := walk(path + "[" + strconv.Itoa(i) + "]"); err != nil {
						return err
					}
				}
				_, err = dec.Token()
				return err
			}
			return nil
		}
		if walk("") != nil {
			return
		}
		if g, w := Fields(got.OrNil()), Fields(want.OrNil()); !slices.Equal(g, w) {
			t.Fatalf("%q: scanner names %q, encoding/json finds %q", js, g, w)
		}
	})
}
