package meshctl

import (
	"context"
	"encoding/json"
	"maps"
	"reflect"

	"meshca/pkg/api"
)

// Unchanged reports whether the server already holds r exactly as given
// (same spec and labels), so that apply can say "unchanged" and write
// nothing, as kubectl does. Any doubt (the resource is absent, or cannot be
// read) answers false and apply writes.
func (c *Client) Unchanged(ctx context.Context, r api.Resource) bool {
	meta := r.GetMeta()
	d, err := api.DescriptorOf(meta.Type)
	if err != nil {
		return false
	}
	cur, err := c.Get(ctx, d, meta.Mesh, meta.Name)
	if err != nil {
		return false
	}
	if !maps.Equal(cur.GetMeta().Labels, meta.Labels) {
		return false
	}
	return sameSpec(cur, r)
}

// sameSpec compares two resources' specs as JSON values, so that key order
// and spacing in fields kept verbatim do not count as changes.
func sameSpec(a, b api.Resource) bool {
	var va, vb any
	for _, p := range []struct {
		r api.Resource
		v *any
	}{{a, &va}, {b, &vb}} {
		js, err := api.MarshalSpec(p.r)
		if err != nil {
			return false
		}
		if err := json.Unmarshal(js, p.v); err != nil {
			return false
		}
	}
	return reflect.DeepEqual(va, vb)
}
