// Package leader chooses, among the meshca-cp instances sharing one
// PostgreSQL database, the one that does the work that must happen once:
// the identity loop's issuance and rotation, builtin root creation, anything
// periodic that writes. Followers serve the API and SDS from the store.
//
// The choice is a lease in the database (table leader_lease, times by the
// database's clock, so the instances' clocks do not matter): the holder
// renews it every renew interval (default 1 s) for the lease duration
// (default 5 s); another instance takes it only once it expired. A leader
// whose renewals fail ends its term on its own clock, lease minus one renew
// interval after the start of its last successful renewal, so it stops
// before the lease can expire in the database.
//
// Fencing: a term's number is the version of the store record TermKey,
// which a new leader updates (after taking the lease) before its term
// starts. Every write of the leader carries Term.Fence, an OpRequire of that
// record at its term's version, in the same transaction: once a new leader
// is elected, a paused or partitioned old leader can commit nothing — its
// commits fail with store.ErrConflict. A fenced commit holds the term record
// (FOR SHARE) while it runs, so a new term starts only after the old term's
// in-flight commits ended; the new leader then reads the state they left.
//
// With a store only one process uses (sqlite, memory), Static makes that
// process the leader for good, with no fence.
//
// The package also keeps the list of instances (table control_planes): each
// heartbeats every renew interval; GET /control-planes shows the list.
package leader
