package redistest

import (
	"testing"
	"time"
)

// WaitFor polls cond every 2ms until it holds, and fails tb when it does
// not within the given time, naming what it waited for.
func WaitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
