package leader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationapply "k8s.io/client-go/applyconfigurations/coordination/v1"
	"k8s.io/client-go/kubernetes"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"meshca/pkg/store"
)

// Labels and annotations of the Leases this package writes.
const (
	// LabelInstance marks the Lease of one meshca-cp instance (its
	// heartbeat); GET /control-planes lists them.
	LabelInstance = "meshca.io/control-plane-instance"
	// AnnotationLeaseDuration is the leader lease's duration as a Go
	// duration: spec.leaseDurationSeconds has whole seconds only, and
	// followers must wait the holder's exact lease.
	AnnotationLeaseDuration = "meshca.io/lease-duration"
	annotationAddress       = "meshca.io/address"
	annotationVersion       = "meshca.io/version"
	fieldManager            = "meshca-cp"
)

// gcEvery is how many heartbeats pass between two removals of the Leases
// of instances silent for instanceRetention (a list of the Leases each).
const gcEvery = 60

// kubeLease keeps the lease in the coordination.k8s.io/v1 Lease
// meshca-cp-leader of the system namespace and each instance's heartbeat in
// a Lease of its own, labelled LabelInstance.
//
// The API server has no clock of its own to offer (a Lease's times are
// written by its holder), so, as client-go's leader election does, a
// follower times the lease by its own clock: it takes the lease over once
// the Lease object did not change (its resourceVersion) for the lease
// duration since it first saw that version. The holder's own deadline (lease
// less one renew interval from the start of its last successful renewal)
// comes before that: the follower can only have seen the renewal after it
// was sent. Writes carry the resourceVersion read, so of two followers
// taking over at once one gets a conflict.
type kubeLease struct {
	leases        coordinationclient.LeaseInterface
	namespace, id string
	leaseDuration time.Duration
	now           func() time.Time

	// Run's goroutine only.
	held       *coordinationv1.Lease // as last written by this instance while it holds it
	observedRV string                // the leader Lease's resourceVersion last seen
	observedAt time.Time             // when it was first seen (this instance's clock)
	beats      int
}

// NewKubernetes returns an elector campaigning through the Lease
// meshca-cp-leader in namespace (which must exist) and fencing through st,
// the store every instance shares (on Kubernetes, the API server). Run
// campaigns.
func NewKubernetes(client kubernetes.Interface, namespace string, st store.Store, opts Options) (*Elector, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if namespace == "" {
		return nil, errors.New("leader: the system namespace is required for the Kubernetes lease")
	}
	b := &kubeLease{
		leases:        client.CoordinationV1().Leases(namespace),
		namespace:     namespace,
		id:            opts.ID,
		leaseDuration: opts.LeaseDuration,
		now:           opts.Now,
	}
	return newElector(b, st, opts), nil
}

func (k *kubeLease) micro() metav1.MicroTime { return metav1.NewMicroTime(k.now()) }

// leaseSeconds is the lease in whole seconds (rounded up, at least 1), for
// spec.leaseDurationSeconds.
func leaseSeconds(d time.Duration) *int32 {
	s := int32(min(math.Ceil(d.Seconds()), math.MaxInt32))
	return &s
}

// duration is how long a follower must see l unchanged before taking it:
// the longer of the holder's lease and this instance's.
func (k *kubeLease) duration(l *coordinationv1.Lease) time.Duration {
	d := k.leaseDuration
	if v, err := time.ParseDuration(l.Annotations[AnnotationLeaseDuration]); err == nil {
		d = max(d, v)
	} else if s := l.Spec.LeaseDurationSeconds; s != nil {
		d = max(d, time.Duration(*s)*time.Second)
	}
	return d
}

func holder(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// take writes this instance into l as its new holder.
func (k *kubeLease) take(l *coordinationv1.Lease) {
	now := k.micro()
	transitions := int32(0)
	if l.Spec.LeaseTransitions != nil {
		transitions = *l.Spec.LeaseTransitions
	}
	if holder(l) != k.id {
		transitions++
		l.Spec.AcquireTime = &now
	}
	id := k.id
	l.Spec.HolderIdentity = &id
	l.Spec.RenewTime = &now
	l.Spec.LeaseDurationSeconds = leaseSeconds(k.leaseDuration)
	l.Spec.LeaseTransitions = &transitions
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[AnnotationLeaseDuration] = k.leaseDuration.String()
}

func (k *kubeLease) acquire(ctx context.Context) (bool, error) {
	l, err := k.leases.Get(ctx, leaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseName, Namespace: k.namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "meshca", "app.kubernetes.io/component": "control-plane"}}}
		k.take(l)
		created, err := k.leases.Create(ctx, l, metav1.CreateOptions{FieldManager: fieldManager})
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("create Lease %s/%s: %w", k.namespace, leaseName, err)
		}
		k.held = created
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read Lease %s/%s: %w", k.namespace, leaseName, err)
	}
	h := holder(l)
	if l.ResourceVersion != k.observedRV {
		k.observedRV, k.observedAt = l.ResourceVersion, k.now()
		if h != "" && h != k.id {
			return false, nil // renewed (or taken) since last seen: wait a whole lease again
		}
	} else if h != "" && h != k.id && k.now().Sub(k.observedAt) < k.duration(l) {
		return false, nil
	}
	// Free (released), ours already, or not renewed for a whole lease.
	k.take(l)
	updated, err := k.leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: fieldManager})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return false, nil // another instance was quicker
	}
	if err != nil {
		return false, fmt.Errorf("take Lease %s/%s: %w", k.namespace, leaseName, err)
	}
	k.held = updated
	return true, nil
}

func (k *kubeLease) renew(ctx context.Context) (bool, error) {
	if k.held == nil {
		return false, nil
	}
	l := k.held.DeepCopy()
	k.take(l)
	updated, err := k.leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: fieldManager})
	if apierrors.IsConflict(err) {
		// Written by someone else since: still ours only if it names us.
		cur, gerr := k.leases.Get(ctx, leaseName, metav1.GetOptions{})
		if gerr != nil {
			return false, fmt.Errorf("read Lease %s/%s: %w", k.namespace, leaseName, gerr)
		}
		if holder(cur) != k.id {
			k.held = nil
			return false, nil
		}
		k.take(cur)
		updated, err = k.leases.Update(ctx, cur, metav1.UpdateOptions{FieldManager: fieldManager})
	}
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		k.held = nil
		return false, nil
	case err != nil:
		return false, fmt.Errorf("renew Lease %s/%s: %w", k.namespace, leaseName, err)
	}
	k.held = updated
	return true, nil
}

func (k *kubeLease) release(ctx context.Context) error {
	l := k.held
	k.held = nil
	if l == nil {
		return nil
	}
	l = l.DeepCopy()
	l.Spec.HolderIdentity = nil
	now := k.micro()
	l.Spec.RenewTime = &now
	_, err := k.leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: fieldManager})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // not ours any more
	}
	return err
}

// instanceLeaseName is the name of id's heartbeat Lease: the id made a DNS
// subdomain, with a hash of the id when that changed it (two ids must not
// share a Lease).
func instanceLeaseName(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-.")
	if len(name) > 200 {
		name = name[:200]
	}
	if name != id {
		sum := sha256.Sum256([]byte(id))
		name = strings.Trim(name+"-"+hex.EncodeToString(sum[:4]), "-")
	}
	return "meshca-cp-" + name
}

func (k *kubeLease) heartbeat(ctx context.Context, self instanceInfo) error {
	now := k.micro()
	spec := coordinationapply.LeaseSpec().WithHolderIdentity(k.id).
		WithAcquireTime(metav1.NewMicroTime(self.StartedAt)).WithRenewTime(now).
		WithLeaseDurationSeconds(*leaseSeconds(k.leaseDuration))
	cfg := coordinationapply.Lease(instanceLeaseName(k.id), k.namespace).
		WithLabels(map[string]string{LabelInstance: "true", "app.kubernetes.io/name": "meshca"}).
		WithAnnotations(map[string]string{annotationAddress: self.Address, annotationVersion: self.Version,
			AnnotationLeaseDuration: k.leaseDuration.String()}).
		WithSpec(spec)
	if _, err := k.leases.Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		return fmt.Errorf("heartbeat Lease: %w", err)
	}
	k.beats++
	if k.beats%gcEvery != 1 {
		return nil
	}
	list, err := k.leases.List(ctx, metav1.ListOptions{LabelSelector: LabelInstance + "=true"})
	if err != nil {
		return fmt.Errorf("list instance Leases: %w", err)
	}
	for _, l := range list.Items {
		if l.Spec.RenewTime != nil && k.now().Sub(l.Spec.RenewTime.Time) > instanceRetention {
			err := k.leases.Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return fmt.Errorf("forget instance Lease %s: %w", l.Name, err)
			}
		}
	}
	return nil
}

func (k *kubeLease) leave(ctx context.Context) error {
	err := k.leases.Delete(ctx, instanceLeaseName(k.id), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// instances lists the heartbeat Leases. Their times are their holders'
// clocks; Online and Leader compare them with this instance's, which is
// good enough for a list shown to people (nothing decides on it).
func (k *kubeLease) instances(ctx context.Context) ([]Instance, error) {
	list, err := k.leases.List(ctx, metav1.ListOptions{LabelSelector: LabelInstance + "=true"})
	if err != nil {
		return nil, fmt.Errorf("list control planes: %w", err)
	}
	lead, err := k.leases.Get(ctx, leaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lead = nil
	} else if err != nil {
		return nil, fmt.Errorf("list control planes: read Lease %s: %w", leaseName, err)
	}
	now := k.now()
	fresh := func(l *coordinationv1.Lease) bool {
		return l.Spec.RenewTime != nil && now.Sub(l.Spec.RenewTime.Time) < k.duration(l)
	}
	out := make([]Instance, 0, len(list.Items))
	for i := range list.Items {
		l := &list.Items[i]
		in := Instance{ID: holder(l), Address: l.Annotations[annotationAddress], Version: l.Annotations[annotationVersion], Online: fresh(l)}
		if in.ID == "" {
			continue
		}
		if l.Spec.AcquireTime != nil {
			in.StartedAt = l.Spec.AcquireTime.UTC()
		}
		if l.Spec.RenewTime != nil {
			in.LastHeartbeat = l.Spec.RenewTime.UTC()
		}
		if lead != nil && holder(lead) == in.ID && fresh(lead) {
			in.Leader = true
			if lead.Spec.AcquireTime != nil {
				t := lead.Spec.AcquireTime.UTC()
				in.LeaderSince = &t
			}
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (k *kubeLease) close() {}
