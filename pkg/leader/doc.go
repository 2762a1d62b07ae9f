// Package leader chooses, among the meshca-cp instances sharing one store
// (a PostgreSQL database, or the Kubernetes API), the one that does the
// work that must happen once: the identity loop's issuance and rotation,
// builtin root creation, anything periodic that writes. Followers serve the
// API and SDS from the store.
//
// The choice is a lease: the holder renews it every renew interval (default
// 1 s) for the lease duration (default 5 s); another instance takes it only
// once it expired. A leader whose renewals fail ends its term on its own
// clock, lease minus one renew interval after the start of its last
// successful renewal, so it stops before the lease can expire for anyone
// else. Two backends keep it:
//
//   - PostgreSQL (New): table leader_lease, times by the database's clock,
//     so the instances' clocks do not matter.
//   - Kubernetes (NewKubernetes): the coordination.k8s.io/v1 Lease
//     meshca-cp-leader in the system namespace. The API server keeps no time
//     of its own, so a follower times the lease on its own clock from the
//     moment it first saw the Lease's current resourceVersion, as
//     client-go's leader election does (only the clocks' rates matter);
//     takeovers are writes conditional on the resourceVersion read.
//
// Fencing: a term's number is the version of the store record TermKey,
// which a new leader updates (after taking the lease) before its term
// starts. Every write of the leader carries Term.Fence, an OpRequire of that
// record at its term's version, in the same transaction: once a new leader
// is elected, a paused or partitioned old leader can commit nothing — its
// commits fail with store.ErrConflict. On PostgreSQL a fenced commit holds
// the term record (FOR SHARE) while it runs, so a new term starts only after
// the old term's in-flight commits ended; the new leader then reads the
// state they left. On Kubernetes the precondition is checked by the store
// as the API server allows (see pkg/store/kube).
//
// With a store only one process uses (sqlite, memory), Static makes that
// process the leader for good, with no fence.
//
// The package also keeps the list of instances (PostgreSQL: table
// control_planes; Kubernetes: one Lease per instance labelled
// meshca.io/control-plane-instance): each heartbeats every renew interval;
// GET /control-planes shows the list.
package leader
