package api

import "strings"

// KubeField maps a Universal field path of a resource of type typ to where
// the Kubernetes form holds it, so that a user (of meshctl, or of kubectl
// through the admission webhook) finds the field in the file they wrote:
// `mtls.backends[0]...` of a Mesh is `spec.mtls.backends[0]...`.
func KubeField(typ, field string) string {
	switch {
	case field == "":
		return ""
	case field == "name":
		return "metadata.name"
	case field == "mesh":
		return `metadata.labels["` + KubeMeshLabel + `"]`
	case field == "type":
		return "kind"
	}
	switch typ {
	case TypeSecret, TypeGlobalSecret:
		if field == "data" {
			return "data.value"
		}
		return field
	case TypeMesh, TypeDataplane, TypeAccessRole, TypeAccessRoleBinding:
		if strings.HasPrefix(field, "labels") {
			return "metadata." + field
		}
		return JoinPath("spec", field)
	default:
		return field
	}
}
