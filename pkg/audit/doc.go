// Package audit records who changed what through the API: every write and
// every token generation, once, as one structured line (who, their groups,
// what, which resource, the result) in the control plane's log and, when
// configured, as a JSON line in an audit file.
//
// An entry never holds request bodies, secret data or token text: only
// names.
package audit
