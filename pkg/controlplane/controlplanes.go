package controlplane

import (
	"log/slog"
	"net/http"

	"meshca/pkg/apiserver"
	"meshca/pkg/leader"
)

// controlPlanesList is the answer of GET /control-planes, shaped as the
// API's other lists.
type controlPlanesList struct {
	Total int               `json:"total"`
	Items []leader.Instance `json:"items"`
	Next  *string           `json:"next"`
}

// controlPlanesHandler lists the instances sharing the store: id, address,
// leader or not and since when, start, last heartbeat, version.
func controlPlanesHandler(el *leader.Elector, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ins, err := el.Instances(r.Context())
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		if ins == nil {
			ins = []leader.Instance{}
		}
		apiserver.WriteJSON(w, http.StatusOK, controlPlanesList{Total: len(ins), Items: ins})
	})
}
