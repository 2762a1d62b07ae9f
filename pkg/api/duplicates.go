package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// DuplicateKeys records in v every key given more than once in the same
// JSON object of js, at any depth (conf blocks and tags included), as
// "path.key: duplicate key". encoding/json keeps the last value and other
// readers the first, so a duplicate is refused rather than resolved, as
// YAML's are. Malformed JSON records nothing: decoding reports it.
func DuplicateKeys(v *ValidationError, js []byte, path string) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber() // numbers are skipped, not parsed
	_ = walkDuplicates(v, dec, path)
}

// walkDuplicates reads one JSON value from dec and checks the objects in it.
func walkDuplicates(v *ValidationError, dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]int{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, ok := kt.(string)
			if !ok {
				return errors.New("object key is not a string")
			}
			p := keyPath(path, key)
			seen[key]++
			if seen[key] == 2 {
				v.Addf(p, "duplicate key %q: given more than once in the same object (remove all but one)", key)
			}
			if err := walkDuplicates(v, dec, p); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := walkDuplicates(v, dec, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// keyPath appends key to path as the rest of the API names fields:
// "mtls.enabledBackend", and `tags["kuma.io/service"]` for a key that is
// not a plain identifier (a tag name with dots and slashes).
func keyPath(path, key string) string {
	if plainKey.MatchString(key) {
		return JoinPath(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
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
