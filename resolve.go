package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/redis/go-redis/v9"
)

// resolve is a whole flight run on a flight goroutine: the Redis read and,
// on a miss, the lock, the wait, the load and the conditional fill described
// in the package documentation. Get runs the read itself and hands only the
// later steps to a goroutine; resolve serves when the leader left before
// its read ended. ctx is detached from the callers and cancelled only by
// Close.
func (c *Cache[K, V]) resolve(ctx context.Context, key K, vkey string) result[V] {
	epoch := c.localEpoch()
	raw, err := c.read(ctx, vkey)
	r, rest := c.afterRead(key, vkey, raw, err, epoch)
	if rest == nil {
		return r
	}
	return rest(ctx)
}

// afterRead decides what the Redis read of a flight means: an answer now
// (a hit, or the in-process copy while Redis fails; rest is nil), or the
// rest of the flight, to run detached from the caller: reviving a stale
// value, loading without the lock while Redis fails, or the miss path.
// Only the paths that need rest build a closure, so a hit allocates none.
func (c *Cache[K, V]) afterRead(key K, vkey string, raw []byte, err error, epoch uint64) (r result[V], rest func(context.Context) result[V]) {
	unreadable := false
	switch {
	case err == nil:
		if r, h, ok := c.decodeResult(raw); ok {
			if c.isStale(r, h.Expiry) {
				return r, func(ctx context.Context) result[V] { return c.revive(ctx, key, vkey, r, epoch) }
			}
			if c.l1 != nil {
				c.l1.refresh(vkey, r, h.Expiry, epoch)
			}
			c.maybeRefresh(key, vkey, h.Expiry, h.LoadTime)
			return r, nil
		}
		unreadable = true
	case errors.Is(err, redis.Nil):
	default:
		c.redisError(err)
		if r, ok := c.localCopy(vkey); ok {
			return r, nil
		}
		if !c.guard.retrySlow(err) {
			// Redis is unavailable: load without the lock, write nothing.
			return r, func(ctx context.Context) result[V] { return c.loadAndFill(ctx, key, keysFor(vkey), lease{}, epoch) }
		}
		// Redis answers, slowly: the lock script reads the value again.
	}
	return r, func(ctx context.Context) result[V] { return c.miss(ctx, key, keysFor(vkey), unreadable, epoch) }
}

// localCopy returns the in-process copy of vkey for a read that Redis
// could not serve, if L1 is on and has one.
func (c *Cache[K, V]) localCopy(vkey string) (result[V], bool) {
	if c.l1 == nil {
		return result[V]{}, false
	}
	return c.l1.get(vkey, false)
}

// read GETs the value key through the guard. The inline path is spelled
// out so that its closure stays on the stack: this is the hit path.
func (c *Cache[K, V]) read(ctx context.Context, vkey string) ([]byte, error) {
	if n, d := c.guard.inlineNode(vkey); n != nil {
		var raw []byte
		err := c.guard.doInline(ctx, n, d, func(ctx context.Context) error {
			var err error
			raw, err = c.rdb.Get(ctx, vkey).Bytes()
			return err
		})
		return raw, err
	}
	var raw []byte
	err := c.guard.do(ctx, vkey, func(ctx context.Context) error {
		var err error
		raw, err = c.rdb.Get(ctx, vkey).Bytes()
		return err
	})
	if err != nil {
		return nil, err // raw may still be written by an abandoned call
	}
	return raw, nil
}

// miss takes the fill lock or waits for its holder, then loads and fills.
// A fill that fails because the key was invalidated or set during the load
// is redone up to the WithMaxRefills bound.
func (c *Cache[K, V]) miss(ctx context.Context, key K, ks keys, unreadable bool, epoch uint64) result[V] {
	var last result[V]
	for attempt := 0; attempt <= c.cfg.maxRefills; attempt++ {
		r, l, done := c.lockOrWait(ctx, ks, unreadable)
		if done {
			return r
		}
		unreadable = false
		var conflict bool
		last, conflict, _ = c.loadAndFillOnce(ctx, key, ks, l, epoch)
		if !conflict {
			return last
		}
	}
	// Every attempt lost to an Invalidate or Set, so every value loaded was
	// read before one of them and must go to no one. Load once more, after
	// the last of them, and hand that out without caching it.
	if last.err != nil && !errors.Is(last.err, ErrNotFound) {
		return last // an error holds no value to go stale
	}
	ld := c.callLoader(ctx, key)
	return result[V]{val: ld.val, err: ld.err, src: fromLoad}
}

// lockOrWait returns either a value another process stored (done is true)
// or the lease under which this flight loads: the lock, or, when the wait
// ran out or Redis failed, a load without it.
func (c *Cache[K, V]) lockOrWait(ctx context.Context, ks keys, unreadable bool) (r result[V], l lease, done bool) {
	deadline := time.Now().Add(c.cfg.lockWait)
	var waited bool
	for round := 0; ; round++ {
		st, raw, got, err := c.acquire(ctx, ks, c.newToken(), unreadable)
		if err != nil {
			c.redisError(err)
			if !c.guard.retrySlow(err) || time.Until(deadline) <= 0 {
				return r, l, false // l is the last lease read, if any
			}
			// Redis answers, slowly: try again rather than load without
			// the lock.
			if !sleep(ctx, min(backoff(round), time.Until(deadline))) {
				return result[V]{err: ctx.Err()}, l, true
			}
			continue
		}
		if st != stateValue {
			l = got
		}
		switch st {
		case stateValue:
			if r, _, ok := c.decodeResult([]byte(raw)); ok {
				return r, l, true
			}
			// Unreadable bytes: poll again ignoring them, so that this
			// flight takes the lock (and replaces them) once nobody holds it.
			unreadable = true
		case stateAcquired:
			c.stats.lockAcquired.Add(1)
			return r, l, false
		case stateLocked:
			unreadable = false // look at what the holder writes
			if !waited {
				waited = true
				c.stats.lockWaits.Add(1)
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			c.stats.lockWaitTimeouts.Add(1)
			l.token = ""
			return r, l, false
		}
		if !sleep(ctx, min(backoff(round), wait)) {
			return result[V]{err: ctx.Err()}, l, true
		}
	}
}

// loadAndFill loads and fills once, without retrying a conflict.
func (c *Cache[K, V]) loadAndFill(ctx context.Context, key K, ks keys, l lease, epoch uint64) result[V] {
	r, _, _ := c.loadAndFillOnce(ctx, key, ks, l, epoch)
	return r
}

// loadAndFillOnce calls the loader and writes its result under lease l. It
// reports conflict when the fill found the key invalidated or set since the
// load began: the result must then be handed to no one. stored reports
// that the fill wrote the result to Redis.
func (c *Cache[K, V]) loadAndFillOnce(ctx context.Context, key K, ks keys, l lease, epoch uint64) (r result[V], conflict, stored bool) {
	ld := c.callLoader(ctx, key)
	r = result[V]{val: ld.val, err: ld.err, src: fromLoad}
	env, ttl, negative, ok := c.prepare(ld)
	if !ok || !l.known {
		if l.token != "" {
			c.release(ctx, ks, l.token)
		}
		if ok && c.l1 != nil {
			// Redis is unavailable: the in-process copy is what bounds the
			// loads of this key until it is back.
			c.l1.put(ks[0], r, time.Time{}, epoch)
		}
		return r, false, false
	}
	expiry := time.Now().Add(ttl) // before the fill: L1 must not outlive the logical expiry
	res, err := c.fill(ctx, ks, l, env, c.physical(ttl, negative), negative)
	conflict = c.settle(ks[0], r, expiry, res, err, epoch)
	return r, conflict, err == nil && (res == fillLocked || res == fillUnlocked)
}

// settle accounts for the outcome of one conditional fill and reports
// whether it was a conflict.
func (c *Cache[K, V]) settle(vkey string, r result[V], expiry time.Time, res fillResult, err error, epoch uint64) (conflict bool) {
	switch {
	case err != nil:
		c.redisError(err)
	case res == fillConflict:
		c.stats.fillConflicts.Add(1)
		return true
	}
	if c.l1 != nil {
		c.l1.put(vkey, r, expiry, epoch)
	}
	return false
}

// loaded is one loader answer for one key.
type loaded[V any] struct {
	val  V
	err  error
	took time.Duration
	late bool          // returned after the load timeout: never cached
	ttl  time.Duration // set by the loader with SetTTL; 0 means the default
	skip bool          // the loader said not to cache this result
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
		env = envelope.Append(nil, envelope.Header{Flags: envelope.NotFound, LoadTime: ld.took, Expiry: time.Now().Add(ttl)}, nil)
		return env, ttl, true, true
	}
	env, err := c.encodeValue(ld.val, ld.took, ttl)
	if err != nil {
		return nil, 0, false, false
	}
	return env, ttl, false, true
}

// callLoader runs the loader for one key; see runLoader.
func (c *Cache[K, V]) callLoader(ctx context.Context, key K) loaded[V] {
	var ld loaded[V]
	ld.took, ld.late, ld.ttl, ld.skip, ld.err = c.runLoader(ctx, func(ctx context.Context) error {
		var err error
		ld.val, err = safeLoad(ctx, c.load, key)
		return err
	})
	return ld
}

// runLoader runs one call of a loader under the load timeout, after
// waiting for a slot when WithMaxConcurrentLoads is set, and counts it.
// late reports that the loader returned after the timeout, when its result
// must not be cached: a load that old may have read data from before an
// Invalidate whose generation has since expired. ttl and skip are what the
// loader asked for with SetTTL.
func (c *Cache[K, V]) runLoader(ctx context.Context, call func(context.Context) error) (took time.Duration, late bool, ttl time.Duration, skip bool, err error) {
	lctx, cancel := context.WithTimeout(ctx, c.cfg.loadTimeout)
	defer cancel()
	if c.loads != nil {
		if err := c.loads.Acquire(lctx, 1); err != nil {
			c.stats.loadErrors.Add(1)
			return 0, true, 0, false, fmt.Errorf("cacheaside: waiting for a load slot (WithMaxConcurrentLoads): %w", err)
		}
		defer c.loads.Release(1)
	}
	scope := &loadScope{}
	lctx = context.WithValue(lctx, loadScopeKey{}, scope)
	c.stats.loads.Add(1)
	start := time.Now()
	err = call(lctx)
	took = time.Since(start)
	late = lctx.Err() != nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.stats.loadErrors.Add(1)
		var pe *PanicError
		if errors.As(err, &pe) {
			c.stats.panics.Add(1)
		}
	}
	return took, late, scope.ttl, scope.skip, err
}

// decodeResult turns a Redis value into a hit and returns the envelope's
// header (logical expiry, load time). ok is false when the bytes are not a
// readable envelope or the codec rejects them: a miss.
func (c *Cache[K, V]) decodeResult(raw []byte) (r result[V], h envelope.Header, ok bool) {
	h, payload, err := envelope.Decode(raw)
	if err != nil {
		c.stats.corrupt.Add(1)
		return r, h, false
	}
	if h.Flags&envelope.NotFound != 0 {
		return result[V]{err: ErrNotFound, src: fromRedis}, h, true
	}
	if err := c.unmarshal(payload, &r.val); err != nil {
		c.stats.corrupt.Add(1)
		return result[V]{}, h, false
	}
	r.src = fromRedis
	return r, h, true
}

// unmarshal calls the codec and turns its panic into an error: foreign
// bytes must never crash the process.
func (c *Cache[K, V]) unmarshal(b []byte, v *V) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: stack()}
		}
	}()
	return c.cfg.codec.Unmarshal(b, v)
}

// encodeValue marshals v into an envelope that expires after ttl.
func (c *Cache[K, V]) encodeValue(v V, took, ttl time.Duration) (env []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: stack()}
		}
	}()
	b, err := c.cfg.codec.Marshal(v)
	if err != nil {
		return nil, err
	}
	return envelope.Append(make([]byte, 0, envelope.MaxHeader+len(b)), envelope.Header{LoadTime: took, Expiry: time.Now().Add(ttl)}, b), nil
}

// sleep pauses for d or until ctx is done, and reports whether it slept the
// whole time.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func stack() []byte { return debug.Stack() }

// localEpoch returns the in-process cache's invalidation epoch, or 0.
func (c *Cache[K, V]) localEpoch() uint64 {
	if c.l1 == nil {
		return 0
	}
	return c.l1.epoch.Load()
}

// detached is a context with the values of one caller and the lifetime of
// the Cache: a flight keeps the first caller's trace and request values but
// is not cancelled when that caller goes away.
type detached struct {
	context.Context // the Cache's lifetime
	values          context.Context
}

func detach(values, life context.Context) context.Context {
	return detached{Context: life, values: values}
}

func (d detached) Value(key any) any { return d.values.Value(key) }
