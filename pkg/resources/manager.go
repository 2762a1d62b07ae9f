// Package resources applies, reads and deletes meshca resources: it runs
// structural validation, lets each CA backend validate its own conf and
// prepare its CA, enforces references between resources (a Secret in use
// cannot be deleted, a Mesh with Dataplanes cannot be deleted) and commits
// every change atomically, so nothing is ever half-applied.
package resources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/store"
)

// ErrReadOnly is returned for local writes to resources a zone control plane
// receives from its global control plane.
var ErrReadOnly = errors.New("read-only")

// Manager is the one place resources are changed through.
type Manager struct {
	store  store.Store
	cas    *ca.Registry
	logger *slog.Logger
	now    func() time.Time
	// ownedTypes are internal record types that belong to a mesh and go with it.
	ownedTypes   []string
	casElsewhere bool
	// readOnly, when set, refuses local writes of synced resources.
	readOnly func(ctx context.Context, key store.Key) error
}

// Options configure a Manager.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// OwnedTypes are internal record types deleted together with their Mesh.
	OwnedTypes []string
	// CAsElsewhere is set on a global control plane: the zones, not this
	// process, read the backends' DataSources and call their CAs, so a Mesh
	// is validated for syntax only (ca.WithSyntaxOnly) and only CA state
	// kept in the store (the builtin root, made once here for every zone)
	// is prepared.
	CAsElsewhere bool
	// ReadOnly, if set, is asked before every local write or deletion; a
	// non-nil error refuses it, changing nothing (a zone refuses edits of
	// what its global control plane owns; global refuses Dataplanes).
	ReadOnly func(ctx context.Context, key store.Key) error
}

// NewManager returns a Manager over s using the CA backends of reg.
func NewManager(s store.Store, reg *ca.Registry, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{store: s, cas: reg, logger: opts.Logger, now: opts.Now, ownedTypes: opts.OwnedTypes, readOnly: opts.ReadOnly, casElsewhere: opts.CAsElsewhere}
}

// Store returns the underlying store.
func (m *Manager) Store() store.Store { return m.store }

// Get returns one resource.
func (m *Manager) Get(ctx context.Context, typ, mesh, name string) (api.Resource, error) {
	rec, err := m.store.Get(ctx, store.Key{Type: typ, Mesh: mesh, Name: name})
	if err != nil {
		return nil, err
	}
	return FromRecord(rec)
}

// List returns resources of a type; mesh "" lists every mesh.
func (m *Manager) List(ctx context.Context, typ, mesh string) ([]api.Resource, error) {
	recs, err := m.store.List(ctx, typ, mesh)
	if err != nil {
		return nil, err
	}
	out := make([]api.Resource, 0, len(recs))
	for _, rec := range recs {
		r, err := FromRecord(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// ApplyOptions change how Apply behaves.
type ApplyOptions struct {
	// DryRun validates everything (including backends' conf) and changes nothing.
	DryRun bool
	// Synced marks a write whose source of truth is elsewhere, allowed
	// where the API's local writes are not (Options.ReadOnly): one made by
	// zone sync, or kubectl's write to the Kubernetes API that the
	// admission webhook dry-runs.
	Synced bool
}

// applyAttempts bounds how often Apply re-reads and retries a commit that
// lost a race (another writer created or changed the same resource, or the
// CA state it provisions, in between): PUT is idempotent, so two identical
// concurrent PUTs both succeed instead of one failing with a conflict.
const applyAttempts = 4

// Apply creates or updates r. It returns created=true when r did not exist.
func (m *Manager) Apply(ctx context.Context, r api.Resource, opts ApplyOptions) (created bool, err error) {
	meta := r.GetMeta()
	if !opts.Synced && m.readOnly != nil {
		if err := m.readOnly(ctx, store.Key{Type: meta.Type, Mesh: meta.Mesh, Name: meta.Name}); err != nil {
			return false, err
		}
	}
	if err := r.Validate(); err != nil {
		return false, err
	}
	if meta.Mesh != "" && !opts.DryRun {
		return m.applyInMesh(ctx, r)
	}
	for attempt := 1; ; attempt++ {
		created, err = m.applyOnce(ctx, r, opts)
		if attempt == applyAttempts || !(errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound)) {
			return created, err
		}
		m.logger.Debug("apply lost a race; reading again", "type", meta.Type, "name", meta.Name, "attempt", attempt)
	}
}

// applyOnce reads the current state, prepares the change and commits it in
// one commit: the resource, the CA state it provisions and the removal of
// CA state it drops. A failed commit leaves nothing to undo.
func (m *Manager) applyOnce(ctx context.Context, r api.Resource, opts ApplyOptions) (created bool, err error) {
	meta := r.GetMeta()
	key := store.Key{Type: meta.Type, Mesh: meta.Mesh, Name: meta.Name}
	existing, err := m.store.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		created = true
	case err != nil:
		return false, err
	}
	var extra []store.Op
	var provisioned []string
	switch res := r.(type) {
	case *api.Mesh:
		var prev *api.Mesh
		if !created {
			p, err := FromRecord(existing)
			if err != nil {
				return false, err
			}
			prev = p.(*api.Mesh)
		}
		extra, provisioned, err = m.prepareMesh(ctx, res, prev, opts.DryRun)
		if err != nil {
			return false, err
		}
	case *api.Secret, *api.Dataplane:
		if err := m.requireMesh(ctx, meta.Mesh); err != nil {
			return false, err
		}
	}
	if opts.DryRun {
		return created, nil
	}
	rec, err := ToRecord(r)
	if err != nil {
		return false, err
	}
	op := store.Op{Kind: store.OpCreate, Record: rec}
	if !created {
		op.Kind = store.OpUpdate
		op.Record.Version = existing.Version
		op.Record.CreationTime = existing.CreationTime
	}
	if err := m.store.Commit(ctx, append([]store.Op{op}, extra...)...); err != nil {
		return false, err
	}
	for _, b := range provisioned {
		m.logger.Info("CA provisioned with its mesh", "mesh", meta.Name, "backend", b)
	}
	m.logger.Info("resource applied", "type", meta.Type, "mesh", meta.Mesh, "name", meta.Name, "created", created)
	return created, nil
}

// applyInMesh creates or updates a resource of a mesh (Dataplane, Secret)
// in a commit that requires the Mesh, so it is never written into a Mesh
// deleted a moment before (a check before the commit would leave that
// window open). It tries to create first, which is what a data plane
// registering does: that costs one commit and no read.
func (m *Manager) applyInMesh(ctx context.Context, r api.Resource) (created bool, err error) {
	meta := r.GetMeta()
	rec, err := ToRecord(r)
	if err != nil {
		return false, err
	}
	require := store.Op{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: meta.Mesh}}}
	err = m.store.Commit(ctx, require, store.Op{Kind: store.OpCreate, Record: rec})
	created = err == nil
	if errors.Is(err, store.ErrAlreadyExists) {
		existing, gerr := m.store.Get(ctx, rec.Key)
		if gerr != nil {
			return false, m.meshError(ctx, meta.Mesh, gerr)
		}
		op := store.Op{Kind: store.OpUpdate, Record: rec}
		op.Record.Version = existing.Version
		err = m.store.Commit(ctx, require, op)
	}
	if err != nil {
		return false, m.meshError(ctx, meta.Mesh, err)
	}
	m.logger.Info("resource applied", "type", meta.Type, "mesh", meta.Mesh, "name", meta.Name, "created", created)
	return created, nil
}

// meshError explains a failed write into mesh: the mesh's absence if that
// is the cause, else err.
func (m *Manager) meshError(ctx context.Context, mesh string, err error) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if merr := m.requireMesh(ctx, mesh); merr != nil {
		return merr
	}
	return err
}

func (m *Manager) requireMesh(ctx context.Context, mesh string) error {
	_, err := m.store.Get(ctx, store.Key{Type: api.TypeMesh, Name: mesh})
	if errors.Is(err, store.ErrNotFound) {
		return api.FieldErr("mesh", "mesh %q does not exist", mesh)
	}
	return err
}

// prepareMesh validates every backend's conf and prepares the enabled
// backend's CA. It returns the ops to commit with the Mesh: those that create
// the CA state the enabled backend keeps in the store (ca.Provisioner), so
// that state exists exactly when a Mesh using it does, and those that remove
// state of backends the update drops. It commits nothing itself.
func (m *Manager) prepareMesh(ctx context.Context, mesh, prev *api.Mesh, dryRun bool) (ops []store.Op, provisioned []string, err error) {
	if m.casElsewhere {
		ctx = ca.WithSyntaxOnly(ctx)
	}
	v := &api.ValidationError{}
	var backends []ca.Backend
	if mesh.MTLS != nil {
		for i, b := range mesh.MTLS.Backends {
			field := fmt.Sprintf("mtls.backends[%d]", i)
			be, err := m.cas.Get(b.Type)
			if err != nil {
				v.Addf(field+".type", "backend type %q is not available yet in this version of meshca (available: %v)", b.Type, m.cas.Types())
				backends = append(backends, nil)
				continue
			}
			backends = append(backends, be)
			v.AddErr(field, be.Validate(ctx, mesh.Name, b))
		}
	}
	if err := v.OrNil(); err != nil {
		return nil, nil, err
	}
	if dryRun {
		return nil, nil, nil
	}
	if b, i, ok := mesh.EnabledMTLSBackend(); ok {
		field := fmt.Sprintf("mtls.backends[%d]", i)
		ectx, cancel := context.WithTimeout(ctx, b.RootChainRequestTimeout()+b.CertRequestTimeout())
		var more []store.Op
		if p, ok := backends[i].(ca.Provisioner); ok && m.casElsewhere {
			more, err = p.ProvisionOps(ectx, mesh.Name, b)
		} else if !m.casElsewhere {
			more, err = ca.Prepare(ectx, backends[i], mesh.Name, b)
		}
		cancel()
		if err != nil {
			return nil, nil, api.PrefixErr(field, err)
		}
		if len(more) > 0 {
			ops = append(ops, more...)
			provisioned = append(provisioned, b.Name)
		}
	}
	// The Secrets the backends read must still exist when the Mesh is
	// stored: a Secret deleted between their validation and this commit
	// fails the commit, which is then retried and refused by validation.
	for i, b := range mtlsBackends(mesh) {
		if u, ok := backends[i].(ca.SecretUser); ok {
			for _, name := range u.UsedSecrets(b) {
				ops = append(ops, store.Op{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: mesh.Name, Name: name}}})
			}
		}
	}
	if prev == nil || prev.MTLS == nil {
		return ops, provisioned, nil
	}
	kept := map[string]bool{}
	if mesh.MTLS != nil {
		for _, b := range mesh.MTLS.Backends {
			kept[b.Name+"\x00"+b.Type] = true
		}
	}
	for _, old := range prev.MTLS.Backends {
		if kept[old.Name+"\x00"+old.Type] {
			continue
		}
		more, err := m.cleanupOps(ctx, mesh.Name, old)
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, more...)
	}
	return ops, provisioned, nil
}

func mtlsBackends(mesh *api.Mesh) []api.MTLSBackend {
	if mesh.MTLS == nil {
		return nil
	}
	return mesh.MTLS.Backends
}

func (m *Manager) cleanupOps(ctx context.Context, mesh string, b api.MTLSBackend) ([]store.Op, error) {
	be, err := m.cas.Get(b.Type)
	if err != nil {
		return nil, nil
	}
	c, ok := be.(ca.Cleaner)
	if !ok {
		return nil, nil
	}
	return c.CleanupOps(ctx, mesh, b)
}

// Delete removes a resource, refusing deletions that would break another.
func (m *Manager) Delete(ctx context.Context, typ, mesh, name string) error {
	if m.readOnly != nil {
		if err := m.readOnly(ctx, store.Key{Type: typ, Mesh: mesh, Name: name}); err != nil {
			return err
		}
	}
	key := store.Key{Type: typ, Mesh: mesh, Name: name}
	if _, err := m.store.Get(ctx, key); err != nil {
		return err
	}
	ops := []store.Op{{Kind: store.OpDelete, Record: store.Record{Key: key}}}
	switch typ {
	case api.TypeMesh:
		more, err := m.meshDeleteOps(ctx, name)
		if err != nil {
			return err
		}
		ops = append(ops, more...)
	case api.TypeSecret:
		meshVersion, err := m.checkSecretUnused(ctx, mesh, name)
		if err != nil {
			return err
		}
		if meshVersion > 0 {
			// The Mesh must be as it was checked: one changed meanwhile may
			// have started using this Secret.
			ops = append(ops, store.Op{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: mesh}, Version: meshVersion}})
		}
	}
	if err := m.store.Commit(ctx, ops...); err != nil {
		if typ == api.TypeMesh && errors.Is(err, store.ErrConflict) {
			// A Dataplane or Secret was added since the listing.
			if _, lerr := m.meshDeleteOps(ctx, name); lerr != nil {
				return lerr
			}
			return fmt.Errorf("mesh %q changed while it was being deleted; try again: %w", name, err)
		}
		if typ == api.TypeSecret && errors.Is(err, store.ErrConflict) {
			// The Mesh changed since it was checked: say whether it uses the
			// Secret now.
			if _, uerr := m.checkSecretUnused(ctx, mesh, name); uerr != nil {
				return uerr
			}
			return fmt.Errorf("mesh %q changed while secret %q was being deleted; try again: %w", mesh, name, err)
		}
		return err
	}
	m.logger.Info("resource deleted", "type", typ, "mesh", mesh, "name", name)
	return nil
}

// CheckDelete refuses, as Delete does and with the same errors, deleting a
// resource another one uses (a Secret a backend of its Mesh reads, a Mesh
// that still has Dataplanes), and commits nothing. It is for stores whose
// records are deleted by someone else after asking: the Kubernetes API
// deletes the object itself once the admission webhook allowed it. A
// resource that does not exist is no error here (the caller is deleting an
// object the store has not seen yet).
func (m *Manager) CheckDelete(ctx context.Context, typ, mesh, name string) error {
	// Not Options.ReadOnly: that guards the API's own writes, and whoever
	// asks deletes elsewhere (kubectl, on Kubernetes, where the API may
	// not delete kuma.io resources at all).
	switch typ {
	case api.TypeMesh:
		_, err := m.meshDeleteOps(ctx, name)
		return err
	case api.TypeSecret:
		_, err := m.checkSecretUnused(ctx, mesh, name)
		return err
	}
	return nil
}

// InUseError refuses a deletion that would break another resource.
type InUseError struct{ Msg string }

func (e *InUseError) Error() string { return e.Msg }

func (m *Manager) meshDeleteOps(ctx context.Context, mesh string) ([]store.Op, error) {
	dps, err := m.store.List(ctx, api.TypeDataplane, mesh)
	if err != nil {
		return nil, err
	}
	if len(dps) > 0 {
		return nil, &InUseError{Msg: fmt.Sprintf("mesh %q still has %d dataplane(s) (e.g. %q): delete them first", mesh, len(dps), dps[0].Name)}
	}
	var ops []store.Op
	types := append([]string{api.TypeSecret}, m.ownedTypes...)
	for _, typ := range types {
		recs, err := m.store.List(ctx, typ, mesh)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			ops = append(ops, store.Op{Kind: store.OpDelete, Record: store.Record{Key: r.Key}})
		}
	}
	// In the same commit, after those deletes: no Dataplane or Secret of
	// the mesh is left, so one added since the listing fails the deletion
	// instead of being left behind in no mesh. (Owned types are written by
	// the control plane itself, which tolerates their absence.)
	for _, typ := range []string{api.TypeDataplane, api.TypeSecret} {
		ops = append(ops, store.Op{Kind: store.OpRequireNone, Record: store.Record{Key: store.Key{Type: typ, Mesh: mesh}}})
	}
	return ops, nil
}

// checkSecretUnused refuses deleting a Secret a backend of its Mesh uses;
// it returns the version of the Mesh it checked (0 when there is none).
func (m *Manager) checkSecretUnused(ctx context.Context, mesh, name string) (int64, error) {
	rec, err := m.store.Get(ctx, store.Key{Type: api.TypeMesh, Name: mesh})
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	r, err := FromRecord(rec)
	if err != nil {
		return 0, err
	}
	mm := r.(*api.Mesh)
	if mm.MTLS == nil {
		return rec.Version, nil
	}
	for _, b := range mm.MTLS.Backends {
		be, err := m.cas.Get(b.Type)
		if err != nil {
			continue
		}
		if u, ok := be.(ca.SecretUser); ok {
			for _, s := range u.UsedSecrets(b) {
				if s == name {
					return 0, &InUseError{Msg: fmt.Sprintf("secret %q is used by backend %q of mesh %q: change the mesh first", name, b.Name, mesh)}
				}
			}
		}
	}
	return rec.Version, nil
}

// ToRecord converts a resource into a store record (Version unset).
func ToRecord(r api.Resource) (store.Record, error) {
	meta := r.GetMeta()
	spec, err := api.MarshalSpec(r)
	if err != nil {
		return store.Record{}, err
	}
	return store.Record{
		Key:    store.Key{Type: meta.Type, Mesh: meta.Mesh, Name: meta.Name},
		Spec:   spec,
		Labels: meta.Labels,
	}, nil
}

// FromRecord converts a store record into a resource with its times set.
func FromRecord(rec store.Record) (api.Resource, error) {
	return api.UnmarshalSpec(api.Meta{
		Type:             rec.Type,
		Mesh:             rec.Mesh,
		Name:             rec.Name,
		CreationTime:     rec.CreationTime,
		ModificationTime: rec.ModificationTime,
		Labels:           rec.Labels,
	}, rec.Spec)
}
