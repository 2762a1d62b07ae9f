package gui

import (
	"net/http"
	"strconv"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
)

// Timeline is the answer of GET /gui/api/meshes/{mesh}/timeline: when the
// mesh's certificates expire and when their rotations are due, counted in
// equal buckets from now over the next certificate lifetime.
type Timeline struct {
	Now           time.Time `json:"now"`
	From          time.Time `json:"from"`
	To            time.Time `json:"to"`
	BucketSeconds float64   `json:"bucketSeconds"`
	Expiries      []int     `json:"expiries"`
	Rotations     []int     `json:"rotations"`
	// Expired counts certificates already expired; Overdue rotations due
	// before now and not done (a stuck backend shows here); Later those
	// beyond the window; Unscheduled data planes with no rotation queued.
	Expired     int `json:"expired"`
	Overdue     int `json:"overdue"`
	LaterExpiry int `json:"laterExpiries"`
	Later       int `json:"laterRotations"`
	Unscheduled int `json:"unscheduled"`
	Total       int `json:"total"`
}

// DefaultBuckets is how many bars the timeline has unless ?buckets= says.
const DefaultBuckets = 48

func (h *Handler) timeline(w http.ResponseWriter, r *http.Request) {
	n := DefaultBuckets
	if s := r.URL.Query().Get("buckets"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1000 {
			apiserver.WriteError(w, h.opts.Logger, api.FieldErr("buckets", "must be a whole number from 1 to 1000, got %q", s))
			return
		}
		n = v
	}
	ms, err := h.meshState(r.PathValue("mesh"))
	if err != nil {
		apiserver.WriteError(w, h.opts.Logger, err)
		return
	}
	now := h.opts.Now()
	sums := h.opts.Source.Summaries(ms.Name)
	// The window is the enabled backend's lifetime, or the longest time
	// left when mTLS is off (certificates of a disabled backend remain).
	window := api.DefaultCertExpiration
	if ms.MTLS {
		window = ms.Enabled.CertExpiration()
	} else {
		var longest time.Duration
		for i := range sums {
			longest = max(longest, sums[i].NotAfter.Sub(now))
		}
		if longest > 0 {
			window = longest
		}
	}
	bucket := window / time.Duration(n)
	if bucket <= 0 {
		bucket = time.Nanosecond
	}
	tl := Timeline{Now: now.UTC(), From: now.UTC(), To: now.Add(bucket * time.Duration(n)).UTC(), BucketSeconds: bucket.Seconds(),
		Expiries: make([]int, n), Rotations: make([]int, n), Total: len(sums)}
	place := func(t time.Time, counts []int, past, later *int) {
		d := t.Sub(now)
		switch i := int(d / bucket); {
		case d < 0:
			*past++
		case i >= n:
			*later++
		default:
			counts[i]++
		}
	}
	for i := range sums {
		s := &sums[i]
		if !s.NotAfter.IsZero() {
			place(s.NotAfter, tl.Expiries, &tl.Expired, &tl.LaterExpiry)
		}
		if s.NextRotation.IsZero() {
			tl.Unscheduled++
		} else {
			place(s.NextRotation, tl.Rotations, &tl.Overdue, &tl.Later)
		}
	}
	apiserver.WriteJSON(w, http.StatusOK, tl)
}
