package acmpca

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
)

// A credential whose content cannot be an AWS credential is named by its
// field at Validate and at Issue, without a request to AWS and without its
// value in the error. A surrounding newline (echo > file, a Secret made
// with --from-file) is tolerated as the AWS CLI tolerates it.
func TestBadCredentialsAreNamedAtOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	secretFile := func(content string) map[string]any {
		p := filepath.Join(t.TempDir(), "cred")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return map[string]any{"file": p}
	}
	auth := func(ak, sk map[string]any) map[string]any {
		return map[string]any{"auth": map[string]any{"awsCredentials": map[string]any{"accessKey": ak, "accessKeySecret": sk}}}
	}
	goodSK := secretFile(testSK + "\n")
	cases := []struct {
		name, field, value string
		set                map[string]any
		parts              []string
	}{
		{"newline inside accessKey", fAccessKey, testAK + "\nAKIDSECONDLINE",
			auth(secretFile(testAK+"\nAKIDSECONDLINE\n"), goodSK), []string{"control character"}},
		{"carriage return inside accessKey", fAccessKey, testAK + "\r" + "X",
			auth(map[string]any{"inlineString": testAK + "\rX"}, goodSK), []string{"control character"}},
		{"secret key pasted as accessKey", fAccessKey, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
			auth(map[string]any{"inlineString": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}, goodSK), []string{"not an AWS access key ID"}},
		{"space inside accessKey", fAccessKey, "AKID MESHCA",
			auth(map[string]any{"inlineString": "AKID MESHCA"}, goodSK), []string{"not an AWS access key ID"}},
		{"too long accessKey", fAccessKey, strings.Repeat("A", 129),
			auth(map[string]any{"inlineString": strings.Repeat("A", 129)}, goodSK), []string{"not an AWS access key ID"}},
		{"newline inside accessKeySecret", fAccessKeySecret, "first-half\nsecond-half",
			auth(map[string]any{"secret": "sec-2"}, secretFile("first-half\nsecond-half\n")), []string{"control character"}},
		{"NUL inside accessKeySecret", fAccessKeySecret, "abc\x00def",
			auth(map[string]any{"secret": "sec-2"}, map[string]any{"inlineString": "abc\x00def"}), []string{"control character"}},
		{"space inside accessKeySecret", fAccessKeySecret, "abc def",
			auth(map[string]any{"secret": "sec-2"}, map[string]any{"inlineString": "abc def"}), []string{"space"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mb := withConf(t, e.seedBackend(), c.set)
			check := func(what string, err error) {
				t.Helper()
				wantErr(t, err, append([]string{c.field + ": "}, c.parts...)...)
				var ve *api.ValidationError
				if !errors.As(err, &ve) || ve.Causes[0].Field != c.field {
					t.Errorf("%s: want a ValidationError on %s, got %#v", what, c.field, err)
				}
				for _, line := range strings.Split(c.value, "\n") {
					if len(line) >= 4 && strings.Contains(err.Error(), line) {
						t.Errorf("%s: error echoes the credential (%q): %v", what, line, err)
					}
				}
			}
			before := counterValue(t, e.be.m.requests)
			check("Validate", e.be.Validate(ctx, mesh, mb))
			check("Ensure", e.be.Ensure(ctx, mesh, mb))
			start := time.Now()
			_, err := e.be.Issue(ctx, mesh, mb, newRequest(t, "bad-cred-"+strings.ReplaceAll(c.name, " ", "-")[:10], time.Hour))
			check("Issue", err)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Issue took %s: a bad credential must fail at once, not after retries", d)
			}
			if n := counterValue(t, e.be.m.requests) - before; n != 0 {
				t.Errorf("%v ACM PCA requests were made with a bad credential, want none", n)
			}
		})
	}

	// Surrounding whitespace is trimmed: a key file or Secret ending in a
	// newline (or CRLF) works.
	mb := withConf(t, e.seedBackend(), auth(secretFile("  "+testAK+"\r\n"), secretFile(testSK+"\r\n")))
	if err := e.be.Validate(ctx, mesh, mb); err != nil {
		t.Fatalf("credentials with a trailing CRLF: %v", err)
	}
	if _, err := e.be.Issue(ctx, mesh, mb, newRequest(t, "trailing-crlf", time.Hour)); err != nil {
		t.Fatalf("credentials with a trailing CRLF: %v", err)
	}
}
