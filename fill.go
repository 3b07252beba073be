package cacheaside

import (
	"context"
	"errors"
	"time"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/protocol"
)

// Load and fill: the one routine that calls the loader under a lease and
// writes its result with the conditional fill, used by every path that
// loads a single key (Get's miss, stale reloads, early refresh, warm-up).
// GetMany's batch runs the same steps for many keys in batch.go, with the
// same prepare and settle.

// loadAndFill loads and fills once, without retrying a conflict.
func (c *Cache[K, V]) loadAndFill(ctx context.Context, key K, ks protocol.Keys, l protocol.Lease, epoch uint64) result[V] {
	r, _, _ := c.loadAndFillOnce(ctx, key, ks, l, epoch)
	return r
}

// loadAndFillOnce calls the loader and writes its result under lease l. It
// reports conflict when the fill found the key invalidated or set since the
// load began: the result must then be handed to no one. stored reports
// that the fill wrote the result to Redis.
func (c *Cache[K, V]) loadAndFillOnce(ctx context.Context, key K, ks protocol.Keys, l protocol.Lease, epoch uint64) (r result[V], conflict, stored bool) {
	stop := c.keepAlive(protocol.HeldBy(l, ks[0]))
	ld := c.callLoader(ctx, key)
	stop()
	r = result[V]{val: ld.val, err: ld.err, src: fromLoad}
	env, ttl, negative, ok := c.prepare(ld)
	if !ok || !l.Known() {
		c.unfilled(ctx, ks, l, r, ok, epoch)
		return r, false, false
	}
	may, err := c.mayFill(ctx, ld.clock, ld.tags, c.physical(ttl, negative))
	if err != nil {
		// Redis failed (died during the load): as for a load without the
		// lock, the result is handed out and kept in L1, not loaded again.
		c.redisError(err)
		c.unfilled(ctx, ks, l, r, true, epoch)
		return r, false, false
	}
	if !may {
		// A Clear came after the load began: its result goes to no one.
		c.giveBack(ctx, ks, l, nil)
		c.stats.fillConflicts.Add(1)
		return r, true, false
	}
	expiry := time.Now().Add(ttl) // before the fill: L1 must not outlive the logical expiry
	res, err := c.lock.Fill(ctx, ks, l, env, c.physical(ttl, negative), negative)
	conflict, stored = c.settle(ks[0], r, expiry, res, err, epoch)
	return r, conflict, stored
}

// unfilled settles a load whose result r is not written: not cacheable
// (cacheable false) or loaded while Redis was unreachable (l not known).
// It gives the lock back, and keeps a cacheable result in L1: while Redis
// is unavailable, the in-process copy is what bounds the loads of the key.
func (c *Cache[K, V]) unfilled(ctx context.Context, ks protocol.Keys, l protocol.Lease, r result[V], cacheable bool, epoch uint64) {
	c.giveBack(ctx, ks, l, r.err)
	if cacheable && c.l1 != nil {
		c.l1.put(ks[0], r, time.Time{}, epoch)
	}
}

// settle accounts for the outcome of one conditional fill, for every path
// that fills (Get, GetMany, stale reloads, refreshes, warm-ups). conflict
// reports that the key was invalidated or set since the load began (or its
// generation evicted): the result must go to no one. stored reports that
// the fill wrote it to Redis.
func (c *Cache[K, V]) settle(vkey string, r result[V], expiry time.Time, res protocol.FillResult, err error, epoch uint64) (conflict, stored bool) {
	switch {
	case err != nil:
		c.redisError(err)
	case res == protocol.FillConflict:
		c.stats.fillConflicts.Add(1)
		return true, false
	}
	if c.l1 != nil {
		c.l1.put(vkey, r, expiry, epoch)
	}
	return false, err == nil && (res == protocol.FillLocked || res == protocol.FillUnlocked)
}

// loaded is one loader answer for one key.
type loaded[V any] struct {
	val  V
	err  error
	took time.Duration
	late bool          // returned after the load timeout: never cached
	ttl  time.Duration // set by the loader with SetTTL; 0 means the default
	skip bool          // the loader said not to cache this result
	// clock is the prefix's invalidation clock known before the load
	// began (clear.go): its envelope records it.
	clock uint64
	tags  []byte // set by the loader with Tag, encoded (envelope.AppendTag)
}

// prepare returns the envelope to write for ld and its jittered TTL. ok is
// false when the result must not be written: an error other than not
// found, a late or uncacheable load, negative caching off, or a value the
// codec cannot encode.
func (c *Cache[K, V]) prepare(ld loaded[V]) (env []byte, ttl time.Duration, negative, ok bool) {
	negative = errors.Is(ld.err, ErrNotFound)
	if ld.late || ld.skip || (ld.err != nil && !negative) || (negative && c.cfg.negativeTTL == 0) {
		return nil, 0, negative, false
	}
	base := c.cfg.ttl
	if negative {
		base = c.cfg.negativeTTL
	}
	if ld.ttl > 0 {
		base = ld.ttl
	}
	ttl = jittered(base, c.cfg.jitter)
	if negative {
		now := time.Now()
		env = envelope.Append(nil, envelope.Header{Flags: envelope.NotFound, LoadTime: ld.took, Expiry: now.Add(ttl), Type: c.fingerprint, Stored: now, Clock: ld.clock, Tags: ld.tags}, nil)
		return env, ttl, true, true
	}
	env, err := c.encodeValue(ld.val, ld.took, ttl, ld.clock, ld.tags)
	if err != nil {
		return nil, 0, false, false
	}
	return env, ttl, false, true
}
