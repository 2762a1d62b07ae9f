// Package podgen generates Dataplanes from Pods, as Kuma's control plane
// does on Kubernetes: a Pod with sidecar injection enabled (the
// kuma.io/sidecar-injection label or annotation, on the Pod or its
// Namespace) and an IP gets a kuma.io Dataplane of the same name in its
// namespace, in the mesh of its kuma.io/mesh annotation (default "default"),
// at the Pod's IP, with one inbound per TCP port of each Service selecting
// it. The Dataplane is owned by the Pod (an ownerReference), so it goes
// with it; the controller also deletes it itself, for clusters whose
// garbage collector lags or does not run.
//
// Dataplane builds the desired resource from a Pod, its Namespace and
// Services (no API calls); Controller keeps the cluster's Dataplanes equal
// to it, on informers (Pods, Services, Namespaces, Dataplanes, Meshes). Dataplanes
// not owned by a Pod (made by hand) are never touched.
package podgen
