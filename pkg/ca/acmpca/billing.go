package acmpca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"meshca/pkg/store"
)

// TypeBilling is the store record that counts one (mesh, backend)'s
// billable certificates by UTC day and month, named after the backend in
// the mesh. It is shared by every instance on the store and survives
// restarts, so the counts a user sees (web view, meshctl inspect mesh) are
// the month's, not the process's. It belongs to its Mesh and goes with it.
const TypeBilling = "CABilling"

// billing is a TypeBilling record's spec.
type billing struct {
	Day         string `json:"day"`   // "2006-01-02", UTC
	Month       string `json:"month"` // "2006-01", UTC
	IssuedDay   int64  `json:"issuedDay"`
	IssuedMonth int64  `json:"issuedMonth"`
}

// roll starts new day and month counts when the UTC calendar moved on.
func (c *billing) roll(now time.Time) {
	day, month := now.Format("2006-01-02"), now.Format("2006-01")
	if month != c.Month {
		c.Month, c.IssuedMonth = month, 0
	}
	if day != c.Day {
		c.Day, c.IssuedDay = day, 0
	}
}

func billingKey(mesh, backend string) store.Key {
	return store.Key{Type: TypeBilling, Mesh: mesh, Name: backend}
}

// countBillable adds one certificate to the stored counts: a read and a
// conditional write, retried when another instance counted meanwhile.
func (b *backend) countBillable(ctx context.Context, mesh, name string) error {
	if b.store == nil {
		return nil
	}
	key := billingKey(mesh, name)
	for attempt := 0; ; attempt++ {
		var c billing
		op := store.Op{Kind: store.OpCreate}
		rec, err := b.store.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(rec.Spec, &c); err != nil {
				return fmt.Errorf("billing counts of mesh %q backend %q: %w", mesh, name, err)
			}
			op = store.Op{Kind: store.OpUpdate, Record: store.Record{Version: rec.Version}}
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		c.roll(b.hooks.now().UTC())
		c.IssuedDay++
		c.IssuedMonth++
		spec, err := json.Marshal(c)
		if err != nil {
			return err
		}
		op.Record.Key, op.Record.Spec = key, spec
		err = b.store.Commit(ctx, op)
		if err == nil || attempt == 4 || !(errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists)) {
			return err
		}
	}
}

// storedBilling returns the stored counts, rolled to now (zero when none).
func (b *backend) storedBilling(ctx context.Context, mesh, name string) (billing, bool) {
	var c billing
	if b.store == nil {
		return c, false
	}
	rec, err := b.store.Get(ctx, billingKey(mesh, name))
	if err != nil || json.Unmarshal(rec.Spec, &c) != nil {
		return c, false
	}
	c.roll(b.hooks.now().UTC())
	return c, true
}
