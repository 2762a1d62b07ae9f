// Package kube is a store.Store on the Kubernetes API, for a control plane
// that runs in a cluster (`meshca-cp run --environment kubernetes`) and
// keeps its state where Kuma keeps it there:
//
//   - Mesh, Dataplane, AccessRole and AccessRoleBinding are custom
//     resources of kuma.io/v1alpha1 (pkg/kube/crd) whose spec is the
//     record's Spec. A Dataplane is namespaced and carries its mesh in a
//     top-level `mesh` field; Dataplane `web-1` in namespace `demo` is the
//     record named `web-1.demo`, Kuma's <name>.<namespace>. A record whose
//     name is not of that form (written through the store by a tool), or
//     that a zone synced to its global control plane (label kuma.io/zone;
//     named <name>.<zone>), is kept in the system namespace under a name
//     derived from its key, the key itself in the meshca.io/name and
//     meshca.io/mesh annotations, as Kuma's global keeps zones' resources.
//   - Secret and GlobalSecret are core/v1 Secrets in the system namespace,
//     of type system.kuma.io/secret (label kuma.io/mesh) and
//     system.kuma.io/global-secret, their bytes in data.value. The record's
//     Spec is the Universal form without meta, {"data":"<base64>"}, as in
//     every store; it is converted at this boundary.
//   - Every other record (issued identities with their private keys, server
//     CAs, the leader term, zone and insight records, …) is a Secret of
//     type meshca.io/state in the system namespace: a DNS-valid name
//     derived from the key, the key in annotations, the labels meshca.io/type
//     and kuma.io/mesh for kubectl, the Spec in data.spec. Secrets, because
//     several hold private keys.
//
// A Secret the store creates for a mesh the informers know is owned by
// that Mesh (an ownerReference), so Kubernetes' garbage collector deletes
// it with the Mesh, as Kuma's do.
//
// # Versions
//
// A record's Version is its object's resourceVersion read as an integer
// (the etcd revision of its last write): it grows on every change,
// including a change made with kubectl, but not by one. Writes are sent
// with the resourceVersion they were checked against as a precondition,
// so the API server refuses a stale one (store.ErrConflict). An op that
// follows another op on the same key in one commit must give version 0:
// the version the earlier op produces is not known before it is applied.
//
// # What a Commit guarantees
//
// Kubernetes has no transaction over several objects. A Commit of this
// process runs alone (commits are serialised in the process) and:
//
//  1. checks every op against the state of its key as the earlier ops leave
//     it (versions, existence, OpRequire, OpRequireNone): a commit that
//     fails here writes nothing. What the API server cannot enforce at a
//     write, an OpRequire with a version (the leader's fence) and an
//     OpRequireNone, is read from the API server; the rest from the
//     informers' view, since the API server refuses a write whose
//     precondition a stale view got wrong (step 4 then undoes the commit);
//  2. applies the writes, each conditional on the resourceVersion checked
//     (an op without a version that meets another writer's change is read
//     again and retried): in op order when two touch one object, else
//     concurrently, 16 at a time (a batch of issued identities), since
//     Kubernetes orders nothing across objects; no write is started after
//     one failed;
//  3. reads again what it required, in the same places, unless it wrote it
//     itself;
//  4. if a write or step 3 fails, undoes the writes already applied, last
//     first, each conditional on the object being as the commit left it,
//     and returns the error (joined with any undo that failed, which is
//     also logged).
//
// What is not atomic: another client (kubectl, another replica) can see a
// commit's first writes before its last, and the records a failed commit
// undid, for a moment; an undone update leaves the content as it was with
// a newer version, an undone delete re-creates the object (new uid and
// creation time); a requirement that changes and changes back while the
// commit applies is not noticed; and an undo that another writer races
// fails, leaving that write in place. Within this process, readers do not
// see a commit's effects out of order: events are published as below.
//
// # Reads and events
//
// Get and List read the records the informers (one per custom resource,
// one per Secret type, no polling) converted; the informers themselves keep
// only the objects' metadata. A Commit returns only once the informers
// have shown its writes, so a process reads its own writes; one refused
// because of another writer's object (already exists, or changed) returns
// once they show that object, so the read that follows sees it. The events of
// a commit are published when it returns, in the order of its ops; changes
// made by others are published as the informers deliver them (Deleted with
// the last state), and those delivered while a commit of this process was
// being applied, before or after its events as they came. Watch(types...)
// delivers only the types asked.
//
// # Errors and RBAC
//
// NotFound, AlreadyExists and Conflict map to the store's sentinels; a
// request RBAC refuses is ErrForbidden, naming the verb, the resource and
// the namespace. Open lists each resource once first, so missing CRDs or
// permissions are reported at start. The control plane needs: get, list,
// watch, create, update and delete on meshes, dataplanes, accessroles and
// accessrolebindings (kuma.io, cluster-wide), and on secrets in the system
// namespace.
package kube
