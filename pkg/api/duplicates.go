package api

import (
	"encoding/json"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DuplicateKeys records in v every key given more than once in the same
// JSON object of js, at any depth (conf blocks and tags included), as
// "path.key: duplicate key". encoding/json keeps the last value and other
// readers the first, so a duplicate is refused rather than resolved, as
// YAML's are. Malformed JSON records nothing: decoding reports it.
//
// It scans js in place: values are skipped, not decoded, so a body's large
// strings (a Secret's data) are not copied (BenchmarkDuplicateKeys).
func DuplicateKeys(v *ValidationError, js []byte, path string) {
	s := dupScanner{b: js, v: v}
	s.value(path, 0)
}

// keyPath appends key to path as validation names fields:
// "mtls.enabledBackend", but `tags["version"]` for a key of a map (tags,
// labels, annotations, a Secret's data) and for a key that is not a plain
// identifier (a tag name with dots and slashes).
func keyPath(path, key string) string {
	if plainKey(key) && !mapField(path) {
		return JoinPath(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// mapField reports whether path ends in a field whose keys are data, not
// field names.
func mapField(path string) bool {
	i := strings.LastIndexAny(path, ".]")
	switch path[i+1:] {
	case "tags", "labels", "annotations", "data", "stringData":
		return true
	}
	return false
}

// plainKey reports whether key is an identifier ([A-Za-z_][A-Za-z0-9_-]*).
func plainKey(key string) bool {
	for i, c := range []byte(key) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '-'):
		default:
			return false
		}
	}
	return key != ""
}

// maxDepth is where the scan gives up, as encoding/json refuses deeper
// nesting: the recursion stays bounded whatever the input.
const maxDepth = 10000

// dupScanner walks JSON for DuplicateKeys. Its methods return false on
// malformed input, which ends the scan.
type dupScanner struct {
	b []byte
	i int
	v *ValidationError
}

func (s *dupScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next consumes one byte, which must be sep or end; it reports whether the
// container ended.
func (s *dupScanner) next(end byte) (ended, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return false, false
	}
	c := s.b[s.i]
	s.i++
	return c == end, c == end || c == ','
}

// value scans one value at s.i.
func (s *dupScanner) value(path string, depth int) bool {
	s.ws()
	if s.i >= len(s.b) || depth > maxDepth {
		return false
	}
	switch s.b[s.i] {
	case '{':
		return s.object(path, depth)
	case '[':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return true
		}
		for n := 0; ; n++ {
			if !s.value(path+"["+strconv.Itoa(n)+"]", depth+1) {
				return false
			}
			if ended, ok := s.next(']'); !ok || ended {
				return ok
			}
		}
	case '"':
		_, ok := s.str(false)
		return ok
	default: // number, true, false, null
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}

func (s *dupScanner) object(path string, depth int) bool {
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	seen := map[string]bool{}
	for {
		s.ws()
		key, ok := s.str(true)
		if !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		p := keyPath(path, key)
		if seen[key] {
			s.v.Addf(p, "duplicate key %q: given more than once in the same object (remove all but one)", key)
		}
		seen[key] = true
		if !s.value(p, depth+1) {
			return false
		}
		if ended, ok := s.next('}'); !ok || ended {
			return ok
		}
	}
}

// str scans the string at s.i. With decode it returns its value (keys are
// short); otherwise it only skips it, copying nothing.
func (s *dupScanner) str(decode bool) (string, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start := s.i
	escaped := false
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i++ // skip the escaped byte; \uXXXX digits need no care
		case '"':
			s.i++
			if !decode {
				return "", true
			}
			raw := s.b[start:s.i]
			if !escaped {
				return string(raw[1 : len(raw)-1]), true
			}
			var out string // "n\u0061me" is the key name
			if json.Unmarshal(raw, &out) != nil {
				return "", false
			}
			return out, true
		}
	}
	return "", false
}

// DuplicateYAMLKeys is DuplicateKeys for a YAML document (JSON included):
// it names the path of a key given twice and both lines, where the YAML
// decoder alone says only the line. A Kubernetes-form document's paths
// start at its top ("spec.mtls..."). Malformed YAML records nothing.
func DuplicateYAMLKeys(v *ValidationError, data []byte, path string) {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return
	}
	walkYAMLDuplicates(v, &doc, path)
}

func walkYAMLDuplicates(v *ValidationError, n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkYAMLDuplicates(v, c, path)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			walkYAMLDuplicates(v, c, path+"["+strconv.Itoa(i)+"]")
		}
	case yaml.MappingNode:
		first := map[string]int{} // key -> line of its first occurrence
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := keyPath(path, k.Value)
			if line, dup := first[k.Value]; dup {
				v.Addf(p, "duplicate key %q: given more than once in the same object (lines %d and %d; remove all but one)", k.Value, line, k.Line)
			} else {
				first[k.Value] = k.Line
			}
			walkYAMLDuplicates(v, val, p)
		}
	}
}
