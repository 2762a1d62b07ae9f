package acmpca

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxAccessKeyID is IAM's limit on an access key ID's length.
const maxAccessKeyID = 128

// cleanCredential returns a credential read from a DataSource, or why it
// cannot be one. Surrounding whitespace is dropped, as the AWS CLI does with
// the values of its credentials file: a key file written by `echo`, or a
// Secret made with `kubectl create secret --from-file`, ends in a newline.
// Anything left that is not one printable line is refused here, before a
// request is signed with it: Go's HTTP client refuses such a header value
// only after the SDK has retried for seconds, and the error then blames the
// endpoint. The reasons never quote the value.
func cleanCredential(data []byte, accessKeyID bool) (string, error) {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", errors.New("is empty")
	}
	if !utf8.ValidString(s) {
		return "", errors.New("is not valid UTF-8 text (a binary file?)")
	}
	for i, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return "", fmt.Errorf("contains a control character (%U) at byte %d of %d: a credential is one line of text (only surrounding whitespace is trimmed)", r, i+1, len(s))
		case r == ' ' || r > 0x7e:
			if accessKeyID {
				return "", fmt.Errorf("is not an AWS access key ID: it contains %s at byte %d of %d; an access key ID is letters, digits and underscores (AWS issues 20, e.g. AKIA…)", describeChar(r), i+1, len(s))
			}
			return "", fmt.Errorf("contains %s at byte %d of %d: an AWS secret access key is printable ASCII without spaces", describeChar(r), i+1, len(s))
		}
	}
	if !accessKeyID {
		return s, nil
	}
	if len(s) > maxAccessKeyID {
		return "", fmt.Errorf("is not an AWS access key ID: %d characters, at most %d (is the secret access key in accessKey?)", len(s), maxAccessKeyID)
	}
	for i, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return "", fmt.Errorf("is not an AWS access key ID: it contains %s at byte %d of %d; an access key ID is letters, digits and underscores (is the secret access key in accessKey?)", describeChar(r), i+1, len(s))
		}
	}
	return s, nil
}

// describeChar names a character of a credential without quoting the
// credential: the character alone says what went wrong ('/' of a secret
// key, a space) and discloses nothing useful.
func describeChar(r rune) string {
	if r == ' ' {
		return "a space"
	}
	if r > 0x7e {
		return fmt.Sprintf("a non-ASCII character (%U)", r)
	}
	return fmt.Sprintf("the character %q", r)
}
