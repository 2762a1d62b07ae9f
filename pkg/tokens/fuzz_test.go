package tokens_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"meshca/pkg/tokens"
)

// FuzzVerify feeds arbitrary text to both token parsers: no input may
// panic, be accepted unless it is a token we issued, or come back in an
// error message.
func FuzzVerify(f *testing.F) {
	tk, _, _ := setup(f, "default")
	ctx := context.Background()
	dp, err := tk.Generate(ctx, "default", "web-1", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	user, err := tk.GenerateUser(ctx, "alice", []string{"team-a"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	dpClaims, _ := tk.Verify(ctx, dp)
	userClaims, _ := tk.VerifyUser(ctx, user)
	for _, s := range []string{dp, user, "", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.eyJOYW1lIjoiYSJ9.", dp + "x", user[:len(user)/2],
		"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.e30.", "eyJhbGciOiJSUzI1NiIsImtpZCI6Ii0xIn0.e30.AAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		// Accepted means: the claims of a token we issued (base64's unused
		// bits make a few spellings of one token decode alike).
		if c, err := tk.Verify(ctx, tok); err != nil {
			if !errors.Is(err, tokens.ErrInvalid) {
				t.Fatalf("Verify: error not ErrInvalid: %v", err)
			}
			if len(tok) > 8 && strings.Contains(err.Error(), tok) {
				t.Fatalf("Verify error contains the token")
			}
		} else if c.ID != dpClaims.ID {
			t.Fatalf("Verify accepted a token we did not issue: %q", tok)
		}
		if c, err := tk.VerifyUser(ctx, tok); err != nil {
			if !errors.Is(err, tokens.ErrInvalid) {
				t.Fatalf("VerifyUser: error not ErrInvalid: %v", err)
			}
			if len(tok) > 8 && strings.Contains(err.Error(), tok) {
				t.Fatalf("VerifyUser error contains the token")
			}
		} else if c.ID != userClaims.ID {
			t.Fatalf("VerifyUser accepted a token we did not issue: %q", tok)
		}
	})
}
