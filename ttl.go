package cacheaside

import (
	"math"
	"math/rand/v2"
	"time"
)

// jittered returns d spread uniformly over [d·(1−f), d·(1+f)], in whole
// milliseconds and never below one millisecond. Redis takes PX in
// milliseconds, so nothing is rounded to seconds.
func jittered(d time.Duration, f float64) time.Duration {
	if f > 0 {
		// Clamp before converting: a float above MaxInt64 converts to
		// MinInt64 on amd64.
		d = time.Duration(min(float64(d)*(1-f+2*f*rand.Float64()), float64(math.MaxInt64-int64(time.Millisecond))))
	}
	d = d.Truncate(time.Millisecond)
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}

// backoff returns the pause before the next poll of a waiter: it starts at
// pollMin, grows by half each round up to pollMax, and is jittered by ±20%
// so that waiters on many hosts do not poll in step.
func backoff(round int) time.Duration {
	d := pollMin
	for i := 0; i < round && d < pollMax; i++ {
		d += d / 2
	}
	d = min(d, pollMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Poll bounds for waiters (a wait longer than a quick load polls more
// slowly; see pollInterval). A waiter sees the holder's value at most about
// pollMax after it lands (BenchmarkStampede measures it); with one poller
// per process per key (the others share its flight) that costs a fleet of
// N processes about N small commands every 2 ms for the length of one
// load. Polling was chosen over pub/sub because it needs no extra
// connection per process and no keyspace notifications, which managed
// Redis services often disable.
const (
	pollMin = 500 * time.Microsecond
	pollMax = 2 * time.Millisecond
)
