// Package access decides what an authenticated identity may do, from the
// AccessRole and AccessRoleBinding resources (Kong Mesh's RBAC shapes):
//
//   - mesh-system:admin may do everything;
//   - any authenticated identity may GET resources that are not secrets
//     (Secret, GlobalSecret);
//   - anything else must be granted by a rule of a role bound to the user
//     (by name) or to one of its groups. A rule matches a request when its
//     types (all when empty), mesh (every mesh when empty; for a Mesh, its
//     name) and names (all when empty) match and its access lists the
//     requested access.
//
// Reading a single Secret or GlobalSecret is the access VIEW_SECRET_DATA.
// An anonymous identity may do nothing here (the API answers it 401 first).
//
// A refusal is a *DeniedError naming who asked and the access it lacks.
package access
