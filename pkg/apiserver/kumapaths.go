package apiserver

import "meshca/pkg/api"

// kumaAltPaths are further paths Kuma serves a resource type at. kumactl
// writes GlobalSecrets at /globalsecrets (Kuma's primary path for them) and
// lists them at /global-secrets, so both are served.
var kumaAltPaths = map[string]string{
	api.TypeGlobalSecret: "globalsecrets",
}

func (s *Server) kumaAltRoutes() {
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
