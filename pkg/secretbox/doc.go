// Package secretbox encrypts data at rest with AES-256-GCM: the records of
// a store that hold secrets (Secret and GlobalSecret data, CA and token
// signing keys, data-plane private keys) are sealed before the store sees
// them and opened when read, so the database alone (an SQLite file, a
// PostgreSQL dump) reveals no secret.
//
// A sealed value names the key that sealed it (an ID derived from the key,
// never the key) and is bound to its record's type, mesh and name, so it
// cannot be moved to another record. A Box opens values sealed with any of
// its keys and seals with the current one, which is how keys are rotated:
// Reseal re-encrypts every record with the current key while the previous
// keys still open what is not yet done.
//
// It never logs or returns key material or plaintext.
package secretbox
