package api

import (
	"strings"
	"testing"
)

func TestSVIDFormat(t *testing.T) {
	for _, tt := range []struct {
		doc, want, err string
	}{
		{doc: "type: Mesh\nname: m\n", want: SVIDFormatSPIFFE},
		{doc: "type: Mesh\nname: m\nmtls: {svidFormat: kuma}\n", want: SVIDFormatKuma},
		{doc: "type: Mesh\nname: m\nmtls: {svidFormat: spiffe}\n", want: SVIDFormatSPIFFE},
		{doc: "type: Mesh\nname: m\nmtls: {svidFormat: x509}\n", err: `mtls.svidFormat: unknown format "x509"`},
		{doc: "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {mtls: {svidFormat: kuma}}\n", want: SVIDFormatKuma},
	} {
		r, _, err := DecodeOne([]byte(tt.doc))
		if err == nil {
			err = r.Validate()
		}
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.doc, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.doc, err)
			continue
		}
		if got := r.(*Mesh).SVID(); got != tt.want {
			t.Errorf("%q: SVID() = %q, want %q", tt.doc, got, tt.want)
		}
	}
}
