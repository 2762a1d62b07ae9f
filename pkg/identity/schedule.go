package identity

import (
	"time"
)

// Rotation policy: renew at 80% of a certificate's lifetime, spread by ±5%
// of the lifetime so data planes certified together do not rotate together.
const (
	rotateFraction = 0.80
	jitterFraction = 0.05
)

// RotateAt returns when a certificate issued at issuedAt and valid until
// notAfter is renewed. jitter is a uniform sample of [-1, 1).
func RotateAt(issuedAt, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(issuedAt)
	if life <= 0 {
		return issuedAt
	}
	f := rotateFraction + jitter*jitterFraction
	return issuedAt.Add(time.Duration(float64(life) * f))
}

// Backoff returns the wait before retry number attempt (1-based) after a
// failed issuance: base doubling per attempt, capped at max, then spread by
// ±20% (sample in [-1, 1)) so failed data planes do not retry in lockstep.
func Backoff(attempt int, base, max time.Duration, jitter float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return time.Duration(float64(d) * (1 + 0.2*jitter))
}
