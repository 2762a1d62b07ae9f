package postgres

import (
	"context"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5"
)

// errPoolClosed is returned by acquire after close.
var errPoolClosed = errors.New("postgres store: closed")

// connPool is a minimal bounded pool of *pgx.Conn. pgxpool would be the
// natural choice but needs github.com/jackc/puddle/v2, which is not in go.mod.
type connPool struct {
	cfg  *pgx.ConnConfig
	idle chan *pgx.Conn
	sem  chan struct{} // one token per open connection

	mu     sync.Mutex
	closed bool
}

func newConnPool(cfg *pgx.ConnConfig, size int) *connPool {
	return &connPool{cfg: cfg, idle: make(chan *pgx.Conn, size), sem: make(chan struct{}, size)}
}

func (p *connPool) acquire(ctx context.Context) (*pgx.Conn, error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, errPoolClosed
	}
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case p.sem <- struct{}{}:
		c, err := pgx.ConnectConfig(ctx, p.cfg)
		if err != nil {
			<-p.sem
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release returns c to the pool, or closes it if it is broken, mid-transaction
// or the pool is closed.
func (p *connPool) release(c *pgx.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.IsClosed() || c.PgConn().IsBusy() || c.PgConn().TxStatus() != 'I' {
		_ = c.Close(context.Background())
		<-p.sem
		return
	}
	p.idle <- c // never blocks: at most cap(sem) connections exist
}

func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for {
		select {
		case c := <-p.idle:
			_ = c.Close(context.Background())
			<-p.sem
		default:
			return
		}
	}
}
