package client

import (
	"math/rand/v2"
	"time"
)

// maxAttempt bounds the attempt counter; base·2^maxAttempt is past any
// sensible cap already.
const maxAttempt = 32

// fullJitter is the "full jitter" backoff: a uniformly random delay in
// [0, min(limit, base·2^attempt)]. Spreading retries over the whole interval
// keeps a crowd of clients whose gateway died from reconnecting in waves.
func fullJitter(attempt int, base, limit time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(backoffCap(attempt, base, limit)) + 1))
}

// backoffCap is min(limit, base·2^attempt), without overflow.
func backoffCap(attempt int, base, limit time.Duration) time.Duration {
	if attempt < 0 {
		attempt = 0
	}
	if attempt >= 62 || base > limit>>attempt {
		return limit
	}
	return base << attempt
}
