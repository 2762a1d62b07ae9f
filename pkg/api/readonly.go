package api

// KumaReadOnly holds the fields Kuma's API server adds to every resource it
// answers with and ignores when one is written back: `kri` (the resource's
// Kuma Resource Identifier) and `snis`. kumactl sends them on apply (it
// round-trips what `kumactl get -o yaml` printed), so the Universal form
// accepts them — and discards them: they are never stored nor answered.
// creationTime and modificationTime, which kumactl sends too, are Meta
// fields the store overwrites.
//
// Any other field not declared by a resource type is still refused with
// "unknown field".
type KumaReadOnly struct {
	KRI  ignored `json:"kri,omitzero"`
	SNIs ignored `json:"snis,omitzero"`
}

// ignored accepts any JSON value and keeps nothing; its zero value is
// omitted when marshalled (omitzero).
type ignored struct{}

// UnmarshalJSON discards the value.
func (*ignored) UnmarshalJSON([]byte) error { return nil }
