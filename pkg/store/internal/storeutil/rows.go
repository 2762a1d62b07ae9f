package storeutil

import (
	"encoding/json"
	"fmt"
	"time"

	"meshca/pkg/store"
)

// Columns are the resources table's columns in the order ScanRecord reads
// them; both SQL stores use this schema.
const Columns = `type, mesh, name, version, spec, labels, created_at, modified_at`

// Scanner is one result row (database/sql and pgx rows both are).
type Scanner interface{ Scan(dest ...any) error }

// Rows is a result set (database/sql and pgx rows both are).
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// ScanRecord reads one row of Columns: labels as JSON text, times as Unix
// nanoseconds.
func ScanRecord(sc Scanner) (store.Record, error) {
	var (
		r                 store.Record
		labels            string
		created, modified int64
	)
	if err := sc.Scan(&r.Type, &r.Mesh, &r.Name, &r.Version, &r.Spec, &labels, &created, &modified); err != nil {
		return store.Record{}, err
	}
	if labels != "" && labels != "{}" {
		if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
			return store.Record{}, fmt.Errorf("decode labels of %s: %w", r.Key, err)
		}
	}
	r.CreationTime = time.Unix(0, created).UTC()
	r.ModificationTime = time.Unix(0, modified).UTC()
	return Clone(r), nil
}

// CollectRecords reads every row of a List query.
func CollectRecords(rows Rows) ([]store.Record, error) {
	var out []store.Record
	for rows.Next() {
		r, err := ScanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
