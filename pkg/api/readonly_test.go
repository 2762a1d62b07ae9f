package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// kumactl 2.14 sends what `kumactl get -o yaml` shows: Kuma's read-only
// fields included (see pkg/apiserver/testdata/kumactl).
func TestKumaReadOnlyFieldsAcceptedAndDropped(t *testing.T) {
	in := `{"type":"Mesh","name":"demo","creationTime":"0001-01-01T00:00:00Z","modificationTime":"0001-01-01T00:00:00Z",` +
		`"kri":"kri_m____demo_","snis":[{"port":1,"sni":"x"}],"mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin"}]}}`
	r, err := DecodeUniversal([]byte(in))
	if err != nil {
		t.Fatalf("DecodeUniversal: %v", err)
	}
	m := r.(*Mesh)
	if m.Name != "demo" || m.MTLS == nil || m.MTLS.EnabledBackend != "ca-1" {
		t.Fatalf("decoded %+v", m)
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"kri"`, `"snis"`} {
		if strings.Contains(string(out), k) {
			t.Errorf("%s is kept: %s", k, out)
		}
	}
	spec, err := MarshalSpec(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(spec), "kri") {
		t.Errorf("stored spec keeps kri: %s", spec)
	}
}

func TestUnknownFieldsBesideKumaReadOnlyStillRefused(t *testing.T) {
	_, err := DecodeUniversal([]byte(`{"type":"Mesh","name":"demo","kri":"kri_m____demo_","bogus":1}`))
	if err == nil || !strings.Contains(err.Error(), "bogus: unknown field") {
		t.Fatalf("err = %v, want bogus: unknown field", err)
	}
	if strings.Contains(err.Error(), "kri") {
		t.Errorf("kri reported: %v", err)
	}
}
