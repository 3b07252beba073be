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
// in the package documentation. Get runs the read itself and calls only the
// later steps; resolve serves when the leader left before its read ended.
// ctx is detached from the callers and cancelled only by Close.
func (c *Cache[K, V]) resolve(ctx context.Context, key K, vkey string) result[V] {
	epoch := c.localEpoch()
	raw, err := c.read(ctx, vkey)
	unreadable := false
	switch {
	case err == nil:
		if r, exp, ok := c.decodeResult(raw); ok {
			if c.l1 != nil {
				c.l1.refresh(key, r, exp, epoch)
			}
			return r
		}
		unreadable = true
	case errors.Is(err, redis.Nil):
	default:
		c.redisError(err)
		if c.l1 != nil {
			if r, ok := c.l1.get(key); ok {
				return r
			}
		}
		return c.loadAndFill(ctx, key, nil, lease{}, epoch)
	}
	return c.miss(ctx, key, keysFor(vkey), unreadable, epoch)
}

// read GETs the value key through the guard. The inline path is spelled
// out so that its closure stays on the stack: this is the hit path.
func (c *Cache[K, V]) read(ctx context.Context, vkey string) ([]byte, error) {
	if c.guard.inline {
		var raw []byte
		err := c.guard.doInline(ctx, func(ctx context.Context) error {
			var err error
			raw, err = c.rdb.Get(ctx, vkey).Bytes()
			return err
		})
		return raw, err
	}
	var raw []byte
	err := c.guard.do(ctx, func(ctx context.Context) error {
		var err error
		raw, err = c.rdb.Get(ctx, vkey).Bytes()
		return err
	})
	return raw, err
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
		last, conflict = c.loadAndFillOnce(ctx, key, ks, l, epoch)
		if !conflict {
			return last
		}
	}
	// Every attempt lost to an Invalidate or Set: hand out the last fresh
	// value without caching it.
	return last
}

// lockOrWait returns either a value another process stored (done is true)
// or the lease under which this flight loads: the lock, or, when the wait
// ran out or Redis failed, a load without it.
func (c *Cache[K, V]) lockOrWait(ctx context.Context, ks keys, unreadable bool) (r result[V], l lease, done bool) {
	deadline := time.Now().Add(c.cfg.lockWait)
	var waited bool
	for round := 0; ; round++ {
		st, raw, got, err := c.acquire(ctx, ks, c.newToken(), unreadable)
		unreadable = false
		if err != nil {
			c.redisError(err)
			return r, l, false // l is the last lease read, if any
		}
		l = got
		switch st {
		case stateValue:
			if r, _, ok := c.decodeResult([]byte(raw)); ok {
				return r, l, true
			}
			// Unreadable bytes that another process has not yet replaced:
			// keep waiting for the holder of the lock.
		case stateAcquired:
			c.stats.lockAcquired.Add(1)
			return r, l, false
		case stateLocked:
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
	r, _ := c.loadAndFillOnce(ctx, key, ks, l, epoch)
	return r
}

// loadAndFillOnce calls the loader and writes its result under lease l. It
// reports conflict when the fill found the key invalidated or set since the
// load began: the result must then be handed to no one.
func (c *Cache[K, V]) loadAndFillOnce(ctx context.Context, key K, ks keys, l lease, epoch uint64) (r result[V], conflict bool) {
	v, err, took, late := c.callLoader(ctx, key)
	negative := errors.Is(err, ErrNotFound)
	r = result[V]{val: v, err: err, src: fromLoad}
	keep := !late && (err == nil || (negative && c.cfg.negativeTTL > 0))
	if !keep || !l.known {
		if l.token != "" {
			c.release(ctx, ks, l.token)
		}
		if keep && c.l1 != nil {
			// Redis is unavailable: the in-process copy is what bounds the
			// loads of this key until it is back.
			c.l1.put(key, r, time.Time{}, epoch)
		}
		return r, false
	}
	var env []byte
	ttl := jittered(c.cfg.ttl, c.cfg.jitter)
	if negative {
		ttl = jittered(c.cfg.negativeTTL, c.cfg.jitter)
		env = envelope.Append(nil, envelope.Header{Flags: envelope.NotFound, LoadTime: took, Expiry: time.Now().Add(ttl)}, nil)
	} else if env, err = c.encodeValue(v, took, ttl); err != nil {
		// The value cannot be stored; the caller still gets it.
		if l.token != "" {
			c.release(ctx, ks, l.token)
		}
		return r, false
	}
	res, err := c.fill(ctx, ks, l, env, ttl, negative)
	switch {
	case err != nil:
		c.redisError(err)
	case res == fillConflict:
		c.stats.fillConflicts.Add(1)
		return r, true
	}
	if c.l1 != nil {
		c.l1.put(key, r, time.Now().Add(ttl), epoch)
	}
	return r, false
}

// callLoader runs the loader under the load timeout, after waiting for a
// slot when WithMaxConcurrentLoads is set. late reports that the loader
// returned after the timeout, when its value must not be cached: a load
// that old may have read data from before an Invalidate whose generation
// has since expired.
func (c *Cache[K, V]) callLoader(ctx context.Context, key K) (v V, err error, took time.Duration, late bool) {
	lctx, cancel := context.WithTimeout(ctx, c.cfg.loadTimeout)
	defer cancel()
	if c.loads != nil {
		if err := c.loads.Acquire(lctx, 1); err != nil {
			c.stats.loadErrors.Add(1)
			return v, fmt.Errorf("cacheaside: waiting for a load slot (WithMaxConcurrentLoads): %w", err), 0, true
		}
		defer c.loads.Release(1)
	}
	c.stats.loads.Add(1)
	start := time.Now()
	v, err = safeLoad(lctx, c.load, key)
	took = time.Since(start)
	late = lctx.Err() != nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.stats.loadErrors.Add(1)
		var pe *PanicError
		if errors.As(err, &pe) {
			c.stats.panics.Add(1)
		}
	}
	return v, err, took, late
}

// decodeResult turns a Redis value into a hit and returns the logical
// expiry stored with it (zero when none). ok is false when the bytes are
// not a readable envelope or the codec rejects them: a miss.
func (c *Cache[K, V]) decodeResult(raw []byte) (r result[V], expiry time.Time, ok bool) {
	h, payload, err := envelope.Decode(raw)
	if err != nil {
		c.stats.corrupt.Add(1)
		return r, expiry, false
	}
	if h.Flags&envelope.NotFound != 0 {
		return result[V]{err: ErrNotFound, src: fromRedis}, h.Expiry, true
	}
	if err := c.unmarshal(payload, &r.val); err != nil {
		c.stats.corrupt.Add(1)
		return result[V]{}, expiry, false
	}
	r.src = fromRedis
	return r, h.Expiry, true
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
