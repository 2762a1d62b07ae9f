package apiserver

import (
	"net/http"
	"sort"

	"meshca/pkg/api"
)

// kumaAltPaths are further paths Kuma serves a resource type at. kumactl
// writes GlobalSecrets at /globalsecrets (Kuma's primary path for them) and
// lists them at /global-secrets, so both are served.
var kumaAltPaths = map[string]string{
	api.TypeGlobalSecret: "globalsecrets",
}

func (s *Server) kumaAltRoutes() {
	s.mux.HandleFunc("GET /_resources", s.resourceTypes)
	for _, d := range api.Descriptors() {
		alt, ok := kumaAltPaths[d.Type]
		if !ok || d.MeshScoped {
			continue
		}
		s.mux.Handle("GET /"+alt, s.wrap(s.list(d)))
		s.mux.Handle("GET /"+alt+"/{name}", s.wrap(s.get(d)))
		s.mux.Handle("PUT /"+alt+"/{name}", s.wrap(s.put(d)))
		s.mux.Handle("DELETE /"+alt+"/{name}", s.wrap(s.delete(d)))
	}
}

// ResourceTypeDescription is one entry of `GET /_resources`, as Kuma
// describes its resource types (kumactl export reads it to know what to
// list).
type ResourceTypeDescription struct {
	Name                string `json:"name"`
	Path                string `json:"path"`
	Scope               string `json:"scope"`
	ReadOnly            bool   `json:"readOnly"`
	IncludeInFederation bool   `json:"includeInFederation"`
	ShortName           string `json:"shortName"`
	SingularDisplayName string `json:"singularDisplayName"`
	PluralDisplayName   string `json:"pluralDisplayName"`
}

// kumaTypes are Kuma 2.14's descriptions of the types meshca stores.
var kumaTypes = map[string]ResourceTypeDescription{
	api.TypeMesh:         {Path: "meshes", IncludeInFederation: true, ShortName: "m", SingularDisplayName: "Mesh", PluralDisplayName: "Meshes"},
	api.TypeSecret:       {Path: "secrets", IncludeInFederation: true, SingularDisplayName: "Secret", PluralDisplayName: "Secrets"},
	api.TypeGlobalSecret: {Path: "globalsecrets", IncludeInFederation: true, SingularDisplayName: "Global Secret", PluralDisplayName: "Global Secrets"},
	api.TypeDataplane:    {Path: "dataplanes", ShortName: "dp", SingularDisplayName: "Dataplane", PluralDisplayName: "Dataplanes"},
}

// resourceTypes answers GET /_resources with the types meshca stores that
// Kuma has too. meshca's own types (access roles) are left out: kumactl
// warns on every type it does not know ("won't be exported because they
// are unknown to kumactl").
func (s *Server) resourceTypes(w http.ResponseWriter, _ *http.Request) {
	out := struct {
		Resources []ResourceTypeDescription `json:"resources"`
	}{Resources: []ResourceTypeDescription{}}
	for _, d := range api.Descriptors() {
		rt, ok := kumaTypes[d.Type]
		if !ok {
			continue
		}
		rt.Name, rt.Scope = d.Type, "Global"
		if d.MeshScoped {
			rt.Scope = "Mesh"
		}
		out.Resources = append(out.Resources, rt)
	}
	sort.Slice(out.Resources, func(i, j int) bool { return out.Resources[i].Name < out.Resources[j].Name })
	WriteJSON(w, http.StatusOK, out)
}
