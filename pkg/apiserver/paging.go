package apiserver

import (
	"encoding/json"
	"log/slog"
	"net/http"
)

// Page returns the bounds [start, end) of the page of a list of total items
// that r asks for with `size` and `offset`, as the resource lists read them,
// and the URL of the next page (nil on the last one). Extra list endpoints
// use it so that every list pages alike.
func Page(r *http.Request, total int) (start, end int, next *string, err error) {
	size, offset, err := parsePaging(r.URL.Query())
	if err != nil {
		return 0, 0, nil, err
	}
	start = min(offset, total)
	end = min(start+size, total)
	if end < total {
		n := nextURL(r, size, end)
		next = &n
	}
	return start, end, next, nil
}

// WriteList answers a list endpoint with the page of items r asks for, in
// the list body every list has (`total`, `items`, `next`).
func WriteList[T any](w http.ResponseWriter, r *http.Request, logger *slog.Logger, items []T) {
	start, end, next, err := Page(r, len(items))
	if err != nil {
		WriteError(w, logger, err)
		return
	}
	raw := make([]json.RawMessage, 0, end-start)
	for _, it := range items[start:end] {
		js, err := json.Marshal(it)
		if err != nil {
			WriteError(w, logger, err)
			return
		}
		raw = append(raw, js)
	}
	WriteJSON(w, http.StatusOK, ListBody{Total: len(items), Items: raw, Next: next})
}
