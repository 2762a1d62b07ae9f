package leader

import (
	"context"
	"time"
)

// backend is where the lease and the instance list live: PostgreSQL
// (pglease.go) or the Kubernetes API (kubelease.go). The Elector drives it
// from one goroutine (Run) and decides, on its own clock, how long a
// successful acquire or renew may be relied on; a backend only has to make
// sure that no other instance can take the lease before it expired, counted
// from the moment the acquire or renew request was sent.
type backend interface {
	// acquire takes the lease if nobody holds it, it expired, or it is
	// already this instance's; true if this instance holds it now.
	acquire(ctx context.Context) (bool, error)
	// renew extends the lease this instance holds; false if it is not
	// this instance's any more.
	renew(ctx context.Context) (bool, error)
	// release gives the lease up (the term already ended), so another
	// instance takes it without waiting for it to expire.
	release(ctx context.Context) error
	// heartbeat records this instance in the list, and forgets instances
	// silent for instanceRetention.
	heartbeat(ctx context.Context, self instanceInfo) error
	// leave removes this instance from the list.
	leave(ctx context.Context) error
	// instances lists the instances, sorted by id.
	instances(ctx context.Context) ([]Instance, error)
	close()
}

// instanceInfo is what a heartbeat records of this instance.
type instanceInfo struct {
	Address, Version string
	StartedAt        time.Time
}
