package cacheaside

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// WithStaleIfError keeps each value in Redis for maxStale past its logical
// expiry (the TTL), so that it can still be served when reloading it fails.
// The envelope carries the logical expiry beside the codec's bytes; Redis's
// own TTL is TTL + maxStale. A Get that finds an expired value reloads it
// under the fill lock; if the loader fails, or another process is already
// reloading it, the old value is returned (counted in Stats.StaleServed)
// with a nil error. After a failed reload the lock is held for a second, so
// a failing database sees about one retry per key per second from the
// whole fleet. Not-found answers are never served stale.
//
// The logical expiry is a wall-clock time written by the process that
// loaded the value: clocks that disagree by s make other processes see the
// value expire up to s early or late. That only moves when a reload is
// tried; it never serves a value past its Redis TTL and never survives an
// Invalidate. Keep hosts on NTP.
//
// Default: 0 (disabled).
func WithStaleIfError(maxStale time.Duration) Option {
	return func(c *config) { c.maxStale = maxStale }
}

// WithSoftTimeout bounds how long a Get waits for the reload of an expired
// value it could serve stale (see [WithStaleIfError]): after d it returns
// the stale value, and the load goes on in the background and fills Redis
// when it completes. Zero means wait for the load (up to the load timeout).
// With [WithMaxConcurrentLoads], a stale value is served at once, without
// a reload, while every load slot is busy: the database is the bottleneck
// and a reload would only queue.
//
// Default: 0.
func WithSoftTimeout(d time.Duration) Option {
	return func(c *config) { c.softTimeout = d }
}

// staleRetryAfter is how long a failed reload of a stale value keeps the
// fill lock, so that the fleet retries a failing loader about once per key
// per interval.
const staleRetryAfter = time.Second

// holdScript extends the lock to ARGV[2] ms if it still holds token ARGV[1].
var holdScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
`)

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
	ks := keysFor(vkey)
	st, _, l, err := c.acquireMode(ctx, ks, c.newToken(), acquireRefresh, c.cfg.maxStale)
	switch {
	case err != nil:
		c.redisError(err)
		return stale
	case st == stateFresh:
		// Another process reloaded it since we read it: read it again.
		if raw, err := c.read(ctx, vkey); err == nil {
			if r, h, ok := c.decodeResult(raw); ok && !c.isStale(r, h.Expiry) {
				return r
			}
		}
		return stale
	case st != stateAcquired:
		return stale // someone else is reloading it, or a failed reload is throttled
	}
	c.stats.lockAcquired.Add(1)

	done := make(chan result[V], 1)
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		done <- c.reload(ctx, key, ks, l, epoch)
	}()
	var soft <-chan time.Time
	if c.cfg.softTimeout > 0 {
		t := time.NewTimer(c.cfg.softTimeout)
		defer t.Stop()
		soft = t.C
	}
	select {
	case r := <-done:
		if r.err != nil && !errors.Is(r.err, ErrNotFound) {
			return stale
		}
		return r
	case <-soft:
		return stale // the reload goes on and fills Redis when it completes
	}
}

// reload loads and fills a stale key under lease l. On a loader error it
// keeps the lock for staleRetryAfter, throttling retries across the fleet.
func (c *Cache[K, V]) reload(ctx context.Context, key K, ks keys, l lease, epoch uint64) result[V] {
	stop := c.keepAlive(l.held(ks[0]))
	ld := c.callLoader(ctx, key)
	stop()
	r := result[V]{val: ld.val, err: ld.err, src: fromLoad}
	env, ttl, negative, ok := c.prepare(ld)
	if !ok {
		if ld.err != nil && !errors.Is(ld.err, ErrNotFound) {
			_ = c.guard.do(context.WithoutCancel(ctx), ks[0], func(ctx context.Context) error {
				return holdScript.Run(ctx, c.rdb, ks, l.token, staleRetryAfter.Milliseconds()).Err()
			})
		} else {
			c.release(ctx, ks, l.token)
		}
		return r
	}
	expiry := time.Now().Add(ttl)
	res, err := c.fill(ctx, ks, l, env, c.physical(ttl, negative), negative)
	c.settle(ks[0], r, expiry, res, err, epoch)
	return r
}
