package policy

import (
	"math/rand/v2"
	"time"
)

// Delay returns the backoff delay after the overall attempt number attempt
// (1-based) failed (docs/behaviour.md#backoff): base × 2^(attempt−1), capped at Max, then
// jittered with r. prev is the previous delay of the request, used by
// decorrelated jitter (0 before the first). The result is in [0, Max].
//
// Delay does not allocate. r must not be shared between goroutines unless
// it is safe for that.
func (b *BackoffRule) Delay(attempt int, prev time.Duration, r rand.Source) time.Duration {
	switch b.Jitter {
	case JitterDecorrelated:
		if prev < b.Base {
			prev = b.Base
		}
		hi := prev * 3
		if hi/3 != prev || hi > b.Max { // saturate
			hi = b.Max
		}
		if hi <= b.Base {
			return min(b.Base, b.Max)
		}
		return b.Base + time.Duration(uniform(r)*float64(hi-b.Base))
	}
	capped := b.Max
	if n := attempt - 1; n < 62 && n >= 0 {
		if raw := b.Base << n; raw>>n == b.Base && raw > 0 && raw < b.Max {
			capped = raw
		}
	} else if n < 0 {
		capped = min(b.Base, b.Max)
	}
	switch b.Jitter {
	case JitterEqual:
		return time.Duration(float64(capped) * (0.5 + 0.5*uniform(r)))
	case JitterFull:
		// U[0, capped], capped included.
		return time.Duration(r.Uint64() % uint64(capped+1))
	}
	return capped
}

// Applies reports whether the backoff delay applies when the next attempt
// goes to target next after target failed failed (the scope gate, docs/behaviour.md#backoff-gate).
func (b *BackoffRule) Applies(c *Compiled, failed, next int) bool {
	switch b.Gate {
	case BackoffSameModel:
		return failed == next
	case BackoffSameProvider:
		return c.SameProvider(failed, next)
	}
	return true
}

// uniform returns a float in [0, 1).
func uniform(r rand.Source) float64 {
	return float64(r.Uint64()>>11) / (1 << 53)
}
