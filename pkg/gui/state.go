package gui

import (
	"time"

	"meshca/pkg/identity"
)

// Certificate states of a data plane, as the pages show them.
const (
	StateValid    = "valid"
	StateExpiring = "expiring" // less than ExpiringFraction of the lifetime left
	StateExpired  = "expired"
	StateFailing  = "failing" // the last issuance failed (a valid certificate may still be in service)
	StateNone     = "none"    // nothing issued yet, nothing failed yet
)

// States lists the states in the order the pages show them.
var States = []string{StateValid, StateExpiring, StateExpired, StateFailing, StateNone}

// ExpiringFraction: a certificate with less than this share of its
// lifetime left is "expiring". Rotation is due at 80 % (±5 %), so a
// certificate stays here only if its rotation is late.
const ExpiringFraction = 0.20

// stateOf classifies one data plane. An expired certificate is reported as
// expired even while issuance fails (it is the more urgent fact; the error
// is shown next to it), as meshca_dataplanes_by_cert_state does.
func stateOf(s *identity.DataplaneSummary, now time.Time) string {
	switch {
	case s.Serial == "" && s.LastError != "":
		return StateFailing
	case s.Serial == "":
		return StateNone
	case !now.Before(s.NotAfter):
		return StateExpired
	case s.LastError != "":
		return StateFailing
	}
	life := s.NotAfter.Sub(s.IssuedAt)
	if life > 0 && s.NotAfter.Sub(now) < time.Duration(float64(life)*ExpiringFraction) {
		return StateExpiring
	}
	return StateValid
}
