package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// BenchmarkListenerEvent is what the listener spends on one event of
// another instance's commit, as a follower receives each identity the
// leader writes: reading it from the changes table (in commits of 64, as
// the leader writes them) and publishing it to a watcher. The spec is the
// size of a sealed DataplaneIdentity record.
func BenchmarkListenerEvent(b *testing.B) {
	dsn := os.Getenv("MESHCA_TEST_POSTGRES_DSN")
	if dsn == "" {
		b.Skip("MESHCA_TEST_POSTGRES_DSN not set")
	}
	ctx := context.Background()
	w, err := Open(ctx, dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	if _, err := w.pool.Exec(ctx, `TRUNCATE resources, changes`); err != nil {
		b.Fatal(err)
	}
	var from int64
	if err := w.pool.QueryRow(ctx, `SELECT seq FROM commit_seq`).Scan(&from); err != nil {
		b.Fatal(err)
	}
	spec := make([]byte, 1500)
	_, _ = rand.Read(spec)
	const perCommit = 64
	for i := 0; i < b.N; i += perCommit {
		var ops []store.Op
		for j := i; j < min(i+perCommit, b.N); j++ {
			ops = append(ops, store.Op{Kind: store.OpCreate, Record: store.Record{
				Key: store.Key{Type: "DataplaneIdentity", Mesh: "default", Name: fmt.Sprintf("dp-%07d", j)}, Spec: spec}})
		}
		if err := w.Commit(ctx, ops...); err != nil {
			b.Fatal(err)
		}
	}
	var through int64
	if err := w.pool.QueryRow(ctx, `SELECT seq FROM commit_seq`).Scan(&through); err != nil {
		b.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, w.pool.Config().ConnConfig)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	s := &Store{logger: slog.New(slog.NewTextHandler(io.Discard, nil)), hub: storeutil.NewHub(), m: newMetrics()}
	events := s.hub.Watch(ctx, "DataplaneIdentity")
	got := make(chan int)
	go func() {
		n := 0
		for range events {
			if n++; n == b.N {
				got <- n
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	// One read per commit, as the listener does when each notification
	// arrives alone (its slowest case: a busy listener reads many at once).
	for pos := from; pos < through; pos++ {
		if _, _, err := s.deliver(ctx, conn, pos, pos+1); err != nil {
			b.Fatal(err)
		}
	}
	<-got
}
