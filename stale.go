package cacheaside

import (
	"context"
	"errors"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// staleRetryAfter is how long a failed reload of a stale value keeps the
// fill lock, so that the fleet retries a failing loader about once per key
// per interval.
const staleRetryAfter = time.Second

// isStale reports whether a value read from Redis is past its logical
// expiry and may only be served stale.
func (c *Cache[K, V]) isStale(r result[V], expiry time.Time) bool {
	return c.cfg.maxStale > 0 && r.err == nil && !expiry.IsZero() && time.Now().After(expiry)
}

// physical returns the Redis TTL of an entry whose logical TTL is ttl.
func (c *Cache[K, V]) physical(ttl time.Duration, negative bool) time.Duration {
	if negative {
		return ttl
	}
	return ttl + c.cfg.maxStale
}

// revive is the flight of a key whose value in Redis is stale: reload it
// under the fill lock, serving the stale value when that fails, when
// another process is reloading it, or after the soft timeout.
func (c *Cache[K, V]) revive(ctx context.Context, key K, vkey string, stale result[V], epoch uint64) result[V] {
	stale.stale = true
	if c.loads != nil {
		// Every load slot is busy: the database is the bottleneck, and a
		// reload would only queue behind the others. Serve the stale value
		// now; a later Get retries.
		if !c.loads.TryAcquire(1) {
			return stale
		}
		c.loads.Release(1)
	}
	ks := protocol.KeysFor(vkey)
	st, _, l, err := c.lock.Acquire(ctx, ks, protocol.ModeRefresh, c.cfg.maxStale)
	switch {
	case err != nil:
		c.redisError(err)
		return stale
	case st == protocol.StateFresh:
		// Another process reloaded it since we read it: read it again.
		m := c.replay.Mark()
		raw, err := c.read(ctx, vkey)
		if r, _, kind := c.classify(vkey, m, raw, err); kind == readHit {
			return r
		}
		return stale
	case st != protocol.StateAcquired:
		return stale // someone else is reloading it, or a failed reload is throttled
	}
	c.stats.lockAcquired.Add(1)

	type outcome struct {
		r           result[V]
		invalidated bool
	}
	done := make(chan outcome, 1)
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		returned := false
		defer func() {
			if !returned { // a codec or hook ended this goroutine (Goexit)
				done <- outcome{r: result[V]{err: errExited}}
			}
		}()
		r, invalidated := c.reload(ctx, key, ks, l, epoch)
		returned = true
		done <- outcome{r, invalidated}
	}()
	var soft <-chan time.Time
	if c.cfg.softTimeout > 0 {
		t := time.NewTimer(c.cfg.softTimeout)
		defer t.Stop()
		soft = t.C
	}
	select {
	case o := <-done:
		if !o.invalidated && o.r.err != nil && !errors.Is(o.r.err, ErrNotFound) {
			return stale
		}
		return o.r
	case <-soft:
		return stale // the reload goes on and fills Redis when it completes
	}
}

// reload loads and fills a stale key under lease l, like the miss path;
// a loader error keeps the lock for staleRetryAfter, throttling retries
// across the fleet. When the fill conflicts, the key was invalidated or
// set during the reload: neither the reloaded value nor the stale one may
// be served, and reload returns what the miss path answers instead, with
// invalidated set.
func (c *Cache[K, V]) reload(ctx context.Context, key K, ks protocol.Keys, l protocol.Lease, epoch uint64) (r result[V], invalidated bool) {
	l.HoldOnError = staleRetryAfter
	r, conflict, _ := c.loadAndFillOnce(ctx, key, ks, l, epoch)
	if !conflict {
		return r, false
	}
	return c.miss(ctx, key, ks, false, epoch), true
}

// ServeStale configures stale serving (see [WithServeStale]).
type ServeStale struct {
	// MaxStale is how long each value stays in Redis past its logical
	// expiry (the TTL), so that it can still be served when reloading it
	// fails. Zero disables stale serving.
	//
	// Default (zero): disabled.
	MaxStale time.Duration

	// SoftTimeout bounds how long a Get (or GetMany) waits for the reload
	// of an expired value it could serve stale: after it the Get returns
	// the stale value, and the load goes on in the background and fills
	// Redis when it completes. With [WithMaxConcurrentLoads], a stale
	// value is served at once, without a reload, while every load slot is
	// busy: the database is the bottleneck and a reload would only queue.
	//
	// Default (zero): wait for the load (up to the load timeout).
	SoftTimeout time.Duration
}
