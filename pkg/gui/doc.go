// Package gui is meshca's web view, served by the control plane at /gui/ on
// its API listener: certificate health of every mesh (by state, expiry
// timeline, per data plane with its decoded certificate and rotation
// history), the CA's roots and a CA switch's progress, and for acmpca
// meshes the ACM Private CA request budget and projected bill.
//
// The page is hand-written HTML, CSS and JavaScript embedded in the binary
// (no library, no CDN: it works offline). It polls JSON endpoints under
// /gui/api/ every 2 s; they read the identity manager's memory, so they
// stay cheap with 10,000 data planes (filtering, sorting and paging are
// done here, server-side). Two of them are also API extensions for the
// CLI: GET /meshes/{mesh}/_overview (meshctl inspect mesh).
//
// Routes are registered through apiserver.Options.Extra, so the web view
// goes through the same middleware (and, once it exists, the same
// authentication) as the API.
package gui
