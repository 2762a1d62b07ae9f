package insights

import (
	"fmt"
	"net/url"
	"strings"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
)

// Filter selects data planes by the query parameters Kuma's `_overview`
// takes: `name` (a substring of the name), `tag=key:value` (repeatable; one
// inbound, or the gateway, must have every key with a value containing
// value), `gateway` (true, false, builtin or delegated) and
// `filter[labels.KEY]=VALUE` (exact label match).
type Filter struct {
	nameContains string
	tags         map[string]string
	gateway      string
	labels       map[string]string
}

// ParseFilter reads a Filter from q; a bad value is an error naming the
// parameter.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{nameContains: q.Get("name"), gateway: strings.ToLower(q.Get("gateway"))}
	switch f.gateway {
	case "", "true", "false", "builtin", "delegated":
	default:
		return Filter{}, apiserver.BadRequest("gateway", fmt.Sprintf("must be true, false, builtin or delegated, got %q", q.Get("gateway")))
	}
	for _, t := range q["tag"] {
		k, v, _ := strings.Cut(t, ":")
		if k == "" {
			return Filter{}, apiserver.BadRequest("tag", fmt.Sprintf("must be key:value, got %q", t))
		}
		if f.tags == nil {
			f.tags = map[string]string{}
		}
		f.tags[k] = v
	}
	for k, vs := range q {
		if !strings.HasPrefix(k, "filter[") {
			continue
		}
		key, ok := strings.CutPrefix(k, "filter[labels.")
		if !ok || !strings.HasSuffix(key, "]") || strings.Count(key, "]") != 1 {
			return Filter{}, apiserver.BadRequest(k, "only filter[labels.KEY]=VALUE is supported")
		}
		if f.labels == nil {
			f.labels = map[string]string{}
		}
		f.labels[strings.TrimSuffix(key, "]")] = vs[len(vs)-1]
	}
	return f, nil
}

func (f Filter) match(dp *api.Dataplane) bool {
	if f.nameContains != "" && !strings.Contains(dp.Name, f.nameContains) {
		return false
	}
	for k, v := range f.labels {
		if got, ok := dp.Labels[k]; !ok || got != v {
			return false
		}
	}
	gw := dp.Networking.Gateway
	switch f.gateway {
	case "true":
		if gw == nil {
			return false
		}
	case "false":
		if gw != nil {
			return false
		}
	case "builtin":
		if gw == nil || gw.Type != "BUILTIN" {
			return false
		}
	case "delegated":
		if gw == nil || gw.Type == "BUILTIN" {
			return false
		}
	}
	if len(f.tags) == 0 {
		return true
	}
	if gw != nil && tagsMatch(gw.Tags, f.tags) {
		return true
	}
	for _, in := range dp.Networking.Inbound {
		if tagsMatch(in.Tags, f.tags) {
			return true
		}
	}
	return false
}

func tagsMatch(have, want map[string]string) bool {
	for k, v := range want {
		got, ok := have[k]
		if !ok || !strings.Contains(got, v) {
			return false
		}
	}
	return true
}
