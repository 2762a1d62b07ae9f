package identity

// The scheduler: which data plane is due when, and handing due ones to workers.

import (
	"container/heap"
	"context"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
)

// considerLocked schedules a data plane: now if it has no valid certificate
// for the current identity and backend, else at its rotation time.
func (m *Manager) considerLocked(k dpKey, st *dpState) {
	ms := m.meshes[k.mesh]
	if ms == nil || !ms.mtls || ms.backend == nil || st.dp == nil {
		return
	}
	now := m.opts.Now()
	cnTmpl := cnTemplate(ms.backend, ms.enabled)
	id, err := BuildIdentity(st.dp, cnTmpl, ms.mesh.SVID())
	if err != nil {
		st.lastErr, st.lastErrAt = err.Error(), now
		return
	}
	fp := fingerprint(id, ms.enabled)
	c := st.cur
	switch {
	case !c.issued(), st.stale, c.rec.Pending != nil, c.rec.Fingerprint != fp, !now.Before(c.rec.NotAfter):
		m.enqueueLocked(k, st, now)
	default:
		m.enqueueLocked(k, st, m.rotateAt(c.rec.IssuedAt, c.rec.NotAfter, c.rec.CertPEM))
	}
}

func cnTemplate(be ca.Backend, b api.MTLSBackend) string {
	if cn, ok := be.(ca.CommonNamer); ok {
		return cn.CommonNameTemplate(b)
	}
	return ""
}

func (m *Manager) enqueueLocked(k dpKey, st *dpState, at time.Time) {
	if st.inFlight {
		if !at.After(m.opts.Now()) {
			st.again = true
		}
		return
	}
	if st.scheduled && !st.due.After(at) {
		return
	}
	st.due, st.scheduled = at, true
	heap.Push(&m.queue, dueItem{at: at, key: k})
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// schedule hands due data planes to the workers.
func (m *Manager) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		var next time.Duration = time.Hour
		var due []dpKey
		now := m.opts.Now()
		for m.queue.Len() > 0 {
			it := m.queue[0]
			st := m.dps[it.key]
			if st == nil || !st.scheduled || !st.due.Equal(it.at) {
				heap.Pop(&m.queue) // stale entry
				continue
			}
			if it.at.After(now) {
				next = it.at.Sub(now)
				break
			}
			heap.Pop(&m.queue)
			st.scheduled, st.inFlight = false, true
			due = append(due, it.key)
			if len(due) >= 256 {
				next = 0
				break
			}
		}
		m.mu.Unlock()
		for _, k := range due {
			select {
			case m.work <- k:
			case <-ctx.Done():
				return
			}
		}
		if next == 0 {
			continue
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}
