package cacheaside

import (
	"context"
	"errors"
	"time"
	"unsafe"

	"github.com/cacheaside/cacheaside/internal/flight"
	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/replay"
)

// The Get path, in the order a Get runs it (the package documentation
// walks through it): the L1 read first with WithLocalFirst, the flight of
// the key in this process, the leader's Redis read (read.go says what the
// reply means), and on a miss the rest of the flight on a goroutine of the
// Cache: the fill lock or the wait for its holder (lockOrWait), the load
// and the conditional fill (fill.go).

// Get returns the value of key: from Redis when it is there, else from the
// loader, once per key across the fleet while Redis is healthy. It returns
// an error matching [ErrNotFound] when the loader said the key does not
// exist (now or within the negative TTL), the loader's error when it failed,
// ctx.Err() as soon as ctx is done (the shared load goes on for the other
// callers), and [ErrClosed] after Close. Redis faults are never returned:
// Get falls back to the in-process cache, if any, and the loader.
//
// The returned value may be shared with other callers and the in-process
// cache: do not modify what it references.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	if c.front != nil && c.cfg.getHook == nil {
		if v, notFound, ok := c.frontGet(ctx, key); ok {
			if notFound {
				return *v, ErrNotFound
			}
			return *v, nil
		}
	}
	start := c.hookStart()
	r := c.getResult(ctx, key)
	c.observe(ctx, start, r)
	return r.val, r.err
}

// getResult is Get, returning the whole answer for the Get hook.
func (c *Cache[K, V]) getResult(ctx context.Context, key K) result[V] {
	if err := ctx.Err(); err != nil {
		return result[V]{err: err}
	}
	if c.closed.Load() {
		return result[V]{err: ErrClosed}
	}
	// The value key, built on the stack for the default key encodings
	// (appendValueKey): the L1 read first and a Get that joins a flight
	// in the air look it up without a string of its own (otter and the
	// flight map keep no key they are asked for); a leader's flight makes
	// one (fl.Key).
	var buf [64]byte
	b, onStack := c.appendValueKey(buf[:0], key)
	var vkey string
	if !onStack {
		vkey = protocol.ValueKey(c.cfg.prefix, c.encode(key))
	}
	if c.l1 != nil && c.cfg.localFirst {
		lkey := vkey
		if onStack {
			lkey = unsafe.String(unsafe.SliceData(b), len(b))
		}
		if r, ok := c.readFirst(key, lkey); ok {
			c.count(r)
			return r
		}
	}
	var fl *flight.Call[result[V]]
	var leader bool
	if onStack {
		fl, leader = c.flights.JoinBytes(ctx, b)
	} else {
		fl, leader = c.flights.Join(ctx, vkey)
	}
	vkey = fl.Key()
	if !leader {
		// While Redis is failing, a local copy beats waiting for the
		// flight's Redis call: it may be the breaker's probe, which can
		// take the whole Redis timeout.
		if c.l1 != nil && !c.guard.Closed(vkey) {
			if r, ok := c.l1.get(vkey, false); ok {
				c.count(r)
				return r
			}
		}
		return c.wait(ctx, fl)
	}
	if !c.tracker.add() {
		c.flights.Finish(vkey, fl, result[V]{err: ErrClosed})
		return result[V]{err: ErrClosed}
	}
	defer c.tracker.done()
	// A codec or hook that ends this goroutine (runtime.Goexit) must not
	// leave the flight in the air: its callers, and every later Get of
	// the key, would wait for ever.
	handed := false
	defer func() {
		if !handed {
			c.flights.Finish(vkey, fl, result[V]{err: errExited})
		}
	}()

	// The leader reads Redis on its own goroutine, under the caller's
	// context and the Redis timeout: a hit costs no goroutine.
	epoch, m := c.localEpoch(), c.replay.Mark()
	raw, err := c.readBatched(ctx, vkey)
	if ctx.Err() != nil {
		// The caller left during the read. Hand the flight to a goroutine
		// so that callers who joined it still get an answer.
		handed = true
		c.startFlight(ctx, fl, vkey, func(fctx context.Context) result[V] {
			return c.resolve(fctx, key, vkey)
		})
		return result[V]{err: ctx.Err()}
	}
	r, rest := c.afterRead(key, vkey, m, raw, err, epoch)
	handed = true
	if rest == nil {
		c.flights.Finish(vkey, fl, r)
		c.count(r)
		return r
	}
	c.startFlight(ctx, fl, vkey, rest)
	return c.wait(ctx, fl)
}

// wait waits for flight fl on behalf of one caller and counts where its
// answer came from; it returns ctx.Err() if ctx is done first.
func (c *Cache[K, V]) wait(ctx context.Context, fl *flight.Call[result[V]]) result[V] {
	if done := ctx.Done(); done != nil {
		select {
		case <-fl.Done():
		case <-done:
			return result[V]{err: ctx.Err()}
		}
	} else {
		<-fl.Done() // a context that is never done: no select
	}
	r := fl.Result()
	c.count(r)
	return r
}

// count records where one caller's answer came from.
func (c *Cache[K, V]) count(r result[V]) {
	if r.stale {
		c.stats.staleServed.Add(1)
	}
	switch r.src {
	case fromRedis:
		c.stats.hits.Add(1)
	case fromLocal:
		c.stats.localHits.Add(1)
	default:
		c.stats.misses.Add(1)
	}
}

// resolve is a whole flight run on a flight goroutine: the Redis read and,
// on a miss, the lock, the wait, the load and the conditional fill described
// in the package documentation. Get runs the read itself and hands only the
// later steps to a goroutine; resolve serves when the leader left before
// its read ended. ctx is detached from the callers and cancelled only by
// Close.
func (c *Cache[K, V]) resolve(ctx context.Context, key K, vkey string) result[V] {
	epoch, m := c.localEpoch(), c.replay.Mark()
	raw, err := c.read(ctx, vkey)
	r, rest := c.afterRead(key, vkey, m, raw, err, epoch)
	if rest == nil {
		return r
	}
	return rest(ctx)
}

// afterRead decides what the Redis read of a flight (sent at mark m of
// the replay queue) means: an answer now (a hit, or the in-process copy
// while Redis fails; rest is nil), or the rest of the flight, to run
// detached from the caller: reviving a stale value, loading without the
// lock while Redis fails, applying the key's pending invalidation, or the
// miss path. Only the paths that need rest build a closure, so a hit
// allocates none.
func (c *Cache[K, V]) afterRead(key K, vkey string, m replay.Mark, raw []byte, err error, epoch uint64) (r result[V], rest func(context.Context) result[V]) {
	r, h, kind := c.classify(vkey, m, raw, err)
	switch kind {
	case readHit:
		if c.l1 != nil {
			c.l1.refresh(vkey, r, h.Expiry, epoch)
		}
		c.maybeRefresh(key, vkey, h.Expiry, h.LoadTime)
		if c.audit != nil {
			c.auditHit(key, vkey, r, h)
		}
		return r, nil
	case readStale:
		// A copy declared here, captured by the closure: capturing r
		// would put it on the heap on every read, hits included.
		stale := r
		return r, func(ctx context.Context) result[V] { return c.revive(ctx, key, vkey, stale, epoch) }
	case readFault:
		// A fault without an error is a key whose invalidation is pending
		// (classify's vet); with one, Redis failed, maybe while it was.
		pending := err == nil || c.replay.Has(vkey)
		if !pending {
			c.redisError(err)
		}
		if r, ok := c.localCopy(vkey); ok {
			return r, nil
		}
		if pending {
			// Apply the key's invalidation now, within the Redis timeout;
			// while it cannot be applied, Redis's copy may be older than it:
			// load without the lock, write nothing.
			return r, func(ctx context.Context) result[V] {
				if c.replay.ApplyKey(ctx, vkey) == nil {
					return c.miss(ctx, key, protocol.KeysFor(vkey), false, epoch)
				}
				return c.loadAndFill(ctx, key, protocol.KeysFor(vkey), protocol.Lease{}, epoch)
			}
		}
		if !c.guard.RetrySlow(err) {
			// Redis is unavailable: load without the lock, write nothing.
			return r, func(ctx context.Context) result[V] {
				return c.loadAndFill(ctx, key, protocol.KeysFor(vkey), protocol.Lease{}, epoch)
			}
		}
		// Redis answers, slowly: the lock script reads the value again.
	}
	unreadable := kind == readUnreadable
	return r, func(ctx context.Context) result[V] {
		return c.miss(ctx, key, protocol.KeysFor(vkey), unreadable, epoch)
	}
}

// miss takes the fill lock or waits for its holder, then loads and fills.
// A fill that fails because the key was invalidated or set during the load
// is redone up to the WithMaxRefills bound.
func (c *Cache[K, V]) miss(ctx context.Context, key K, ks protocol.Keys, unreadable bool, epoch uint64) result[V] {
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
// ran out or Redis failed, a load without it. A holder keeps its lock
// alive while it loads (see keepAlive), so without a lock wait of its own
// (the default) a waiter waits for the holder's value, or takes the lock
// over once a dead holder's lock has expired.
func (c *Cache[K, V]) lockOrWait(ctx context.Context, ks protocol.Keys, unreadable bool) (r result[V], l protocol.Lease, done bool) {
	began := time.Now()
	bounded := c.cfg.lockWait >= 0
	deadline := began.Add(c.cfg.lockWait)
	var waited bool
	for round := 0; ; round++ {
		m := c.replay.Mark()
		st, raw, got, err := c.acquire(ctx, ks, unreadable)
		if err != nil {
			c.redisError(err)
			// Redis answers, slowly: try again rather than load without
			// the lock, within the lock wait (or the guard's limit when
			// the wait has no bound of its own).
			retryUntil := deadline
			if !bounded {
				retryUntil = began.Add(c.guard.Limit())
			}
			if !c.guard.RetrySlow(err) || time.Until(retryUntil) <= 0 {
				return r, l, false // l is the last lease read, if any
			}
			if !sleep(ctx, min(backoff(round), time.Until(retryUntil))) {
				return result[V]{err: ctx.Err()}, l, true
			}
			continue
		}
		if st != protocol.StateValue {
			l = got
		}
		switch st {
		case protocol.StateValue:
			switch r, _, kind := c.classify(ks[0], m, []byte(raw), nil); kind {
			case readHit, readStale:
				return r, l, true
			case readFault:
				// The key's invalidation is pending (replay.go): load
				// without the lock, write nothing.
				return r, protocol.Lease{}, false
			}
			// Unreadable bytes: poll again ignoring them, so that this
			// flight takes the lock (and replaces them) once nobody holds it.
			unreadable = true
		case protocol.StateAcquired:
			c.stats.lockAcquired.Add(1)
			return r, l, false
		case protocol.StateLocked:
			unreadable = false // look at what the holder writes
			if !waited {
				waited = true
				c.stats.lockWaits.Add(1)
			}
		}
		pause := pollInterval(round, time.Since(began))
		if bounded {
			wait := time.Until(deadline)
			if wait <= 0 {
				c.stats.lockWaitTimeouts.Add(1)
				l.Token = ""
				return r, l, false
			}
			pause = min(pause, wait)
		}
		if !sleep(ctx, pause) {
			return result[V]{err: ctx.Err()}, l, true
		}
	}
}

// pollInterval is how long a waiter sleeps before it looks at the fill
// lock again, after round looks over waited: backoff's short steps while
// the wait is as short as a quick load, then an eighth of the time waited,
// at most pollSlow. A waiter on a slow database then adds at most about an
// eighth to its wait, and each of the many waiters of an overloaded
// database sends Redis a few commands per second instead of hundreds.
func pollInterval(round int, waited time.Duration) time.Duration {
	return max(backoff(round), min(waited/8, pollSlow))
}

// pollSlow bounds the poll interval of a long lock wait.
const pollSlow = 200 * time.Millisecond

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
