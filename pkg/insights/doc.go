// Package insights serves Kuma's read-only insight resources — the
// DataplaneOverview (a Dataplane with its DataplaneInsight), the MeshInsight
// and, for a standalone control plane, empty zone lists — in the shapes
// Kuma's API server gives them, so that `kumactl inspect` works against
// meshca. The data come from the store (Dataplanes, Meshes, Secrets), from
// pkg/identity's per-data-plane certificate state and from [Connections],
// which records the SDS streams each data plane has open now and had before.
package insights
