// Package authn says who is calling the API: a loopback client of the plain
// listener (admin when the operator allows it, as in Kuma), the holder of a
// user token (Authorization: Bearer), or nobody (anonymous).
//
// It decides identity only; what an identity may do is package access's
// concern. It never logs or returns a token's text.
package authn
