package podgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"meshca/pkg/api"
	"meshca/pkg/kube/crd"
)

var (
	dataplanesGVR = schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "dataplanes"}
	meshesGVR     = schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"}
)

// Options configure a Controller.
type Options struct {
	Logger *slog.Logger
	// Workers reconcile Pods concurrently (default 4).
	Workers int
}

// Controller keeps a Dataplane for every Pod that should have one.
type Controller struct {
	client  kubernetes.Interface
	dyn     dynamic.Interface
	logger  *slog.Logger
	workers int
}

// New returns a Controller writing through client (Pods, Services,
// Namespaces) and dyn (Dataplanes).
func New(client kubernetes.Interface, dyn dynamic.Interface, opts Options) *Controller {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	return &Controller{client: client, dyn: dyn, logger: opts.Logger, workers: opts.Workers}
}

// run is the state of one Run: informers, listers and the queue of Pod
// keys (namespace/name) to reconcile.
type run struct {
	*Controller
	pods       corelisters.PodLister
	services   corelisters.ServiceLister
	namespaces corelisters.NamespaceLister
	dataplanes cache.GenericLister
	queue      workqueue.TypedRateLimitingInterface[string]
}

// Run watches Pods, Services, Namespaces and Dataplanes and reconciles
// until ctx ends (a control plane runs it while it leads). Every Run
// starts from fresh informers, so it can be called again after a lost
// term.
func (c *Controller) Run(ctx context.Context) error {
	// The informers hold every Pod and Service of the cluster: without
	// their managedFields, often most of a small object's size.
	factory := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTransform(dropManagedFields))
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 0)
	if err := dynFactory.ForResource(dataplanesGVR).Informer().SetTransform(slimDataplane); err != nil {
		return fmt.Errorf("podgen: %w", err)
	}
	r := &run{
		Controller: c,
		pods:       factory.Core().V1().Pods().Lister(),
		services:   factory.Core().V1().Services().Lister(),
		namespaces: factory.Core().V1().Namespaces().Lister(),
		dataplanes: dynFactory.ForResource(dataplanesGVR).Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "podgen"}),
	}
	defer r.queue.ShutDown()
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{factory.Core().V1().Pods().Informer(), r.podHandler()},
		{factory.Core().V1().Services().Informer(), r.serviceHandler()},
		{factory.Core().V1().Namespaces().Informer(), r.namespaceHandler()},
		{dynFactory.ForResource(dataplanesGVR).Informer(), r.dataplaneHandler()},
		{dynFactory.ForResource(meshesGVR).Informer(), r.meshHandler()},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return fmt.Errorf("podgen: %w", err)
		}
	}
	factory.Start(ctx.Done())
	dynFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer dynFactory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("podgen: %v informer not synced: %w", typ, context.Cause(ctx))
		}
	}
	for gvr, ok := range dynFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("podgen: %v informer not synced: %w", gvr, context.Cause(ctx))
		}
	}
	c.logger.Info("generating Dataplanes from Pods")
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for r.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	r.queue.ShutDown()
	wg.Wait()
	return nil
}

func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// slimDataplane is what the informer keeps of a Dataplane: a generated one
// whole (without managedFields), since it is compared with what its Pod
// makes and updated from it; of any other, which the generator only ever
// leaves alone, its identity alone — the control plane's store already
// keeps every Dataplane whole, and a cluster of hand-made ones would
// otherwise be held twice.
func slimDataplane(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || podOwner(u) != nil {
		return dropManagedFields(obj)
	}
	slim := &unstructured.Unstructured{Object: map[string]any{}}
	slim.SetAPIVersion(u.GetAPIVersion())
	slim.SetKind(u.GetKind())
	slim.SetNamespace(u.GetNamespace())
	slim.SetName(u.GetName())
	slim.SetUID(u.GetUID())
	slim.SetResourceVersion(u.GetResourceVersion())
	return slim, nil
}

func (r *run) next(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.reconcile(ctx, key); err != nil {
		if ctx.Err() != nil {
			return false
		}
		// A conflict or an existing object is the informers' copy lagging
		// behind a write: retried, not worth a warning.
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			r.logger.Debug("generating Dataplane: retrying on a newer copy", "pod", key, "error", err)
		} else {
			r.logger.Warn("generating Dataplane: will retry", "pod", key, "error", err)
		}
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

func (r *run) enqueue(namespace, name string) { r.queue.Add(namespace + "/" + name) }

// enqueueSelected queues the Pods of the Service's namespace it selects.
func (r *run) enqueueSelected(svc *corev1.Service) {
	pods, _ := r.pods.Pods(svc.Namespace).List(labels.Everything())
	for _, p := range pods {
		if Selects(svc, p) {
			r.enqueue(p.Namespace, p.Name)
		}
	}
}

func (r *run) podHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.enqueueKeyOf(obj) },
		UpdateFunc: func(_, obj any) { r.enqueueKeyOf(obj) },
		DeleteFunc: func(obj any) { r.enqueueKeyOf(obj) },
	}
}

func (r *run) enqueueKeyOf(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		r.queue.Add(key)
	}
}

func (r *run) serviceHandler() cache.ResourceEventHandler {
	svcOf := func(obj any) *corev1.Service {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		s, _ := obj.(*corev1.Service)
		return s
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if s := svcOf(obj); s != nil {
				r.enqueueSelected(s)
			}
		},
		// The Pods it selected before and those it selects now.
		UpdateFunc: func(old, obj any) {
			for _, s := range []*corev1.Service{svcOf(old), svcOf(obj)} {
				if s != nil {
					r.enqueueSelected(s)
				}
			}
		},
		DeleteFunc: func(obj any) {
			if s := svcOf(obj); s != nil {
				r.enqueueSelected(s)
			}
		},
	}
}

// namespaceHandler re-queues a Namespace's Pods when its injection or mesh
// setting may have changed.
func (r *run) namespaceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			o, _ := old.(*corev1.Namespace)
			n, _ := obj.(*corev1.Namespace)
			if o == nil || n == nil || (o.Labels[InjectionKey] == n.Labels[InjectionKey] && o.Annotations[InjectionKey] == n.Annotations[InjectionKey] &&
				o.Labels[MeshKey] == n.Labels[MeshKey] && o.Annotations[MeshKey] == n.Annotations[MeshKey]) {
				return
			}
			pods, _ := r.pods.Pods(n.Name).List(labels.Everything())
			for _, p := range pods {
				r.enqueue(p.Namespace, p.Name)
			}
		},
	}
}

// meshHandler queues the Pods of a Mesh that appears: admission refuses a
// Dataplane of a mesh that does not exist, so theirs may be waiting for it.
func (r *run) meshHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				return
			}
			pods, _ := r.pods.List(labels.Everything())
			for _, p := range pods {
				ns, _ := r.namespaces.Get(p.Namespace)
				if InjectionEnabled(p, ns) && MeshOf(p, ns) == u.GetName() {
					r.enqueue(p.Namespace, p.Name)
				}
			}
		},
	}
}

// dataplaneHandler queues the Pod of a generated Dataplane that changed or
// went (edited or deleted by someone else, or left over by a Pod deleted
// while no control plane led), so it is put back or removed.
func (r *run) dataplaneHandler() cache.ResourceEventHandler {
	handle := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if u, ok := obj.(*unstructured.Unstructured); ok && podOwner(u) != nil {
			r.enqueue(u.GetNamespace(), u.GetName())
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
		DeleteFunc: handle,
	}
}

// podOwner is the Pod owner reference of a generated Dataplane (one owned
// by the Pod of its own name), nil for any other Dataplane.
func podOwner(u *unstructured.Unstructured) *metav1.OwnerReference {
	for _, o := range u.GetOwnerReferences() {
		if o.APIVersion == "v1" && o.Kind == "Pod" && o.Name == u.GetName() {
			return &o
		}
	}
	return nil
}

// reconcile makes the Dataplane of the Pod at key what Dataplane says:
// created, updated, or deleted when the Pod has none (or is gone).
func (r *run) reconcile(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller queued
	}
	var desired *api.Dataplane
	pod, err := r.pods.Pods(namespace).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		pod = nil
	case err != nil:
		return err
	default:
		ns, _ := r.namespaces.Get(namespace)
		svcs, _ := r.services.Services(namespace).List(labels.Everything())
		if desired, err = Dataplane(pod, ns, svcs); err != nil {
			// Its labels or Services make no valid Dataplane: not retried
			// (it is queued again when the pod, its Services or its
			// Namespace change); the existing one is left as it is.
			r.logger.Warn("pod's Dataplane not generated", "pod", key, "error", err)
			return nil
		}
	}
	var existing *unstructured.Unstructured
	if obj, err := r.dataplanes.ByNamespace(namespace).Get(name); err == nil {
		existing, _ = obj.(*unstructured.Unstructured)
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	client := r.dyn.Resource(dataplanesGVR).Namespace(namespace)
	if existing != nil && podOwner(existing) == nil {
		if desired != nil {
			r.logger.Debug("Dataplane not generated: one not owned by the pod exists; left as it is", "pod", key)
		}
		return nil
	}
	if desired == nil {
		if existing == nil {
			return nil
		}
		return r.delete(ctx, client, existing)
	}
	obj, err := object(pod, desired)
	if err != nil {
		return err
	}
	if existing != nil && same(existing, obj) {
		return nil
	}
	if existing != nil {
		if m, _, _ := unstructured.NestedString(existing.Object, "mesh"); m != desired.Mesh {
			// A Dataplane does not move between meshes: this one goes and
			// is created again in its new mesh.
			if err := r.delete(ctx, client, existing); err != nil {
				return err
			}
			existing = nil
		}
	}
	if existing == nil {
		if _, err := client.Create(ctx, obj, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("create Dataplane %s/%s: %w", namespace, name, err)
		}
		r.logger.Info("Dataplane generated", "dataplane", desired.Name, "mesh", desired.Mesh, "address", desired.Networking.Address, "inbounds", len(desired.Networking.Inbound))
		return nil
	}
	upd := existing.DeepCopy()
	upd.Object["mesh"] = obj.Object["mesh"]
	upd.Object["spec"] = obj.Object["spec"]
	upd.SetOwnerReferences(obj.GetOwnerReferences())
	if _, err := client.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("update Dataplane %s/%s: %w", namespace, name, err)
	}
	r.logger.Info("Dataplane updated", "dataplane", desired.Name, "mesh", desired.Mesh, "address", desired.Networking.Address, "inbounds", len(desired.Networking.Inbound))
	return nil
}

// delete removes a generated Dataplane, only if it is still the object
// read (its UID), so one recreated meanwhile stays.
func (r *run) delete(ctx context.Context, client dynamic.ResourceInterface, existing *unstructured.Unstructured) error {
	uid := existing.GetUID()
	err := client.Delete(ctx, existing.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return nil // already gone, or another object now
	case err != nil:
		return fmt.Errorf("delete Dataplane %s/%s: %w", existing.GetNamespace(), existing.GetName(), err)
	}
	r.logger.Info("generated Dataplane deleted", "dataplane", existing.GetName()+"."+existing.GetNamespace())
	return nil
}

// FieldManager names meshca's writes in the objects' managedFields.
const FieldManager = "meshca-cp"

// object is the custom resource of the Pod's Dataplane: <pod> in the Pod's
// namespace, its mesh at the top level, owned by the Pod.
func object(pod *corev1.Pod, dp *api.Dataplane) (*unstructured.Unstructured, error) {
	spec, err := toMap(dp.DataplaneSpec)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.Group + "/" + crd.Version,
		"kind":       api.TypeDataplane,
		"mesh":       dp.Mesh,
		"spec":       spec,
	}}
	u.SetName(pod.Name)
	u.SetNamespace(pod.Namespace)
	controller := true
	u.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: &controller}})
	return u, nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// same tells whether the existing Dataplane already is the desired one:
// mesh, spec and owner (compared as JSON, which sorts map keys).
func same(existing, desired *unstructured.Unstructured) bool {
	for _, f := range []string{"mesh", "spec"} {
		a, err1 := json.Marshal(existing.Object[f])
		b, err2 := json.Marshal(desired.Object[f])
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			return false
		}
	}
	o := podOwner(existing)
	return o != nil && o.UID == desired.GetOwnerReferences()[0].UID && len(existing.GetOwnerReferences()) == 1
}
