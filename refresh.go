package cacheaside

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// refreshSlots bounds the background refreshes of one Cache.
const refreshSlots = 4

// xfetch reports whether a value that expires at expiry and took delta to
// load should be refreshed now, for a uniform u in (0, 1].
func xfetch(now, expiry time.Time, delta time.Duration, beta, u float64) bool {
	// Compared as floats: Δ·β·ln u may be beyond what a Duration holds
	// (a huge β), and converting it would wrap around.
	gap := -float64(delta) * beta * math.Log(u)
	return gap >= float64(expiry.Sub(now))
}

// maybeRefresh starts a background refresh of key when XFetch says so.
// The caller must be registered with the tracker.
func (c *Cache[K, V]) maybeRefresh(key K, vkey string, expiry time.Time, took time.Duration) {
	if c.cfg.earlyBeta == 0 || expiry.IsZero() || took <= 0 {
		return
	}
	if !xfetch(time.Now(), expiry, took, c.cfg.earlyBeta, 1-rand.Float64()) {
		return
	}
	// A value that lives longer than what was left of this one, plus one
	// load and refreshSlack, was written after we read it: someone
	// refreshed it.
	c.startRefresh(key, vkey, time.Until(expiry)+max(took, refreshSlack)+c.cfg.maxStale)
}

// refreshSlack is how much longer than its header says a value may live
// in Redis and still be the one a hit read: its TTL starts when Redis runs
// the write, after the header's expiry was computed, and a loaded writer
// or a slow network puts tens of milliseconds between the two
// (TestEarlyRefreshAfterSlowWrite: with 10 ms, a write 50 ms late made
// every refresh of the value think someone else had done it, and early
// refresh never fired). A value refreshed by another process lives about
// a whole TTL; one taken for the old one by this slack is only loaded
// once more, under the fill lock.
const refreshSlack = time.Second

// startRefresh reloads key in the background unless this process already
// is or the pool is full. freshAfter is the Redis TTL above which the value
// counts as already refreshed by someone else. The caller must be
// registered with the tracker.
func (c *Cache[K, V]) startRefresh(key K, vkey string, freshAfter time.Duration) {
	if _, busy := c.refreshing.LoadOrStore(vkey, struct{}{}); busy {
		return // this process is already refreshing the key
	}
	select {
	case c.refreshSem <- struct{}{}:
	default:
		c.refreshing.Delete(vkey)
		c.stats.refreshesSkipped.Add(1)
		return // the pool is full: a later hit will try again
	}
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		defer func() { <-c.refreshSem }()
		defer c.refreshing.Delete(vkey)
		defer func() {
			if p := recover(); p != nil {
				c.log(context.Background(), slog.LevelError, "cacheaside: early refresh panicked", "panic", fmt.Sprint(p))
			}
		}()
		c.refresh(c.life, key, vkey, max(freshAfter, time.Millisecond))
	}()
}

// refresh reloads key under its fill lock, leaving the current value in
// place until the new one is written. It does nothing when another
// process holds the lock or has refreshed the value since it was read.
func (c *Cache[K, V]) refresh(ctx context.Context, key K, vkey string, freshAfter time.Duration) {
	ks := protocol.KeysFor(vkey)
	st, _, l, err := c.lock.Acquire(ctx, ks, protocol.ModeRefresh, freshAfter)
	if err != nil {
		c.redisError(err)
		return
	}
	if st != protocol.StateAcquired {
		return
	}
	c.stats.lockAcquired.Add(1)
	c.stats.earlyRefreshes.Add(1)
	c.loadAndFillOnce(ctx, key, ks, l, c.localEpoch())
}
