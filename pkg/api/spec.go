package api

import (
	"encoding/json"
	"fmt"
)

var metaKeys = []string{"type", "mesh", "name", "creationTime", "modificationTime", "labels"}

// MarshalSpec returns the JSON of a resource without its Meta: what the store
// keeps as a record's Spec.
func MarshalSpec(r Resource) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, err
	}
	for _, k := range metaKeys {
		delete(m, k)
	}
	return json.Marshal(m)
}

// UnmarshalSpec rebuilds a resource from its Meta and stored Spec.
func UnmarshalSpec(meta Meta, spec []byte) (Resource, error) {
	d, err := DescriptorOf(meta.Type)
	if err != nil {
		return nil, err
	}
	r := d.New()
	if len(spec) > 0 {
		if err := json.Unmarshal(spec, r); err != nil {
			return nil, fmt.Errorf("stored %s %q: %w", meta.Type, meta.Name, err)
		}
	}
	*r.GetMeta() = meta
	return r, nil
}
