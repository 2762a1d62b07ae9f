package api

import (
	"errors"
	"slices"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type conf struct {
		A int    `json:"a"`
		B string `json:"b"`
		N *struct {
			A int `json:"a"`
		} `json:"n,omitempty"`
		L []struct {
			A int `json:"a"`
		} `json:"l,omitempty"`
	}
	tests := []struct {
		in         string
		wantFields []string
		want       conf
	}{
		{in: `{"a":1,"b":"x"}`, want: conf{A: 1, B: "x"}},
		{in: ``},
		{in: `null`},
		{in: `{"c":1}`, wantFields: []string{"conf.c"}},
		{in: `{"a":"1"}`, wantFields: []string{"conf.a"}},
		{in: `[1]`, wantFields: []string{"conf"}},
		{in: `{"a":1}{}`, wantFields: []string{"conf"}},
		{in: `{"a":`, wantFields: []string{"conf"}},
		{in: `{"n":{"x":1,"a":2}}`, wantFields: []string{"conf.n.x"}},
		{in: `{"l":[{"a":1},{"y":1}]}`, wantFields: []string{"conf.l[1].y"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var c conf
			err := DecodeStrict([]byte(tt.in), &c, "conf")
			var ve *ValidationError
			var got []string
			if errors.As(err, &ve) {
				for _, cause := range ve.Causes {
					got = append(got, cause.Field)
				}
			} else if err != nil {
				t.Fatalf("error %v is not a ValidationError", err)
			}
			if !slices.Equal(got, tt.wantFields) {
				t.Fatalf("fields = %v, want %v (%v)", got, tt.wantFields, err)
			}
			if err == nil && (c.A != tt.want.A || c.B != tt.want.B) {
				t.Errorf("decoded %+v, want %+v", c, tt.want)
			}
		})
	}
}
