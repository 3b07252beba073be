package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/protocol"
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
	r, h, kind := c.classify(raw, err)
	switch kind {
	case readHit:
		if c.l1 != nil {
			c.l1.refresh(vkey, r, h.Expiry, epoch)
		}
		c.maybeRefresh(key, vkey, h.Expiry, h.LoadTime)
		return r, nil
	case readStale:
		return r, func(ctx context.Context) result[V] { return c.revive(ctx, key, vkey, r, epoch) }
	case readFault:
		c.redisError(err)
		if r, ok := c.localCopy(vkey); ok {
			return r, nil
		}
		if !c.guard.retrySlow(err) {
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

// readKind is what one Redis read of a value key means.
type readKind int

const (
	readHit        readKind = iota // a value or not-found marker to answer with
	readStale                      // a value past its logical expiry (WithStaleIfError): reload it
	readMiss                       // nothing there
	readUnreadable                 // bytes or a Redis type the cache cannot read: a miss that replaces them
	readFault                      // no answer from Redis: neither a hit nor a miss
)

// classify says what a read of a value key means, for every path that
// reads one: raw and err are the reply of a GET (see read), of one key of
// an MGET (raw nil for a missing key, err the error of its node) or the
// value an acquire found (err nil). r and h are the decoded entry of a hit
// or a stale value. An unreadable entry is counted in Stats.Corrupt.
func (c *Cache[K, V]) classify(raw []byte, err error) (r result[V], h envelope.Header, kind readKind) {
	switch {
	case errors.Is(err, errWrongType):
		c.stats.corrupt.Add(1)
		return r, h, readUnreadable
	case errors.Is(err, redis.Nil), err == nil && raw == nil:
		return r, h, readMiss
	case err != nil:
		return r, h, readFault
	}
	r, h, ok := c.decodeResult(raw)
	switch {
	case !ok:
		return result[V]{}, h, readUnreadable
	case c.isStale(r, h.Expiry):
		return r, h, readStale
	}
	return r, h, readHit
}

// errWrongType is what read returns for a value key that holds another
// Redis type than a string (a list, a hash: another program's data). It
// is an unreadable entry, which the miss path replaces under the lock;
// the guard never sees it, so it is not a Redis fault.
var errWrongType = errors.New("cacheaside: value key holds another Redis type")

// isWrongType reports whether err is Redis's WRONGTYPE reply.
func isWrongType(err error) bool {
	if err == nil {
		return false // the hit path: no allocation for errors.As
	}
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "WRONGTYPE")
}

// localCopy returns the in-process copy of vkey for a read that Redis
// could not serve, if L1 is on and has one.
func (c *Cache[K, V]) localCopy(vkey string) (result[V], bool) {
	if c.l1 == nil {
		return result[V]{}, false
	}
	return c.l1.get(vkey, false)
}

// read GETs the value key through the guard. A WRONGTYPE reply is an
// answer, not a fault: the guard sees success and read returns
// errWrongType. The inline path is spelled out so that its closure stays
// on the stack: this is the hit path.
func (c *Cache[K, V]) read(ctx context.Context, vkey string) ([]byte, error) {
	var (
		raw   []byte
		wrong bool
		err   error
	)
	if n, d := c.guard.inlineNode(vkey); n != nil {
		err = c.guard.doInline(ctx, n, d, func(ctx context.Context) error {
			var err error
			raw, err = c.rdb.Get(ctx, vkey).Bytes()
			wrong = isWrongType(err)
			if wrong {
				return nil
			}
			return err
		})
	} else {
		err = c.guard.do(ctx, vkey, func(ctx context.Context) error {
			var err error
			raw, err = c.rdb.Get(ctx, vkey).Bytes()
			wrong = isWrongType(err)
			if wrong {
				return nil
			}
			return err
		})
	}
	switch {
	case err != nil:
		return nil, err // raw may still be written by an abandoned call
	case wrong:
		return nil, errWrongType
	}
	return raw, nil
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
		st, raw, got, err := c.acquire(ctx, ks, c.newToken(), unreadable)
		if err != nil {
			c.redisError(err)
			// Redis answers, slowly: try again rather than load without
			// the lock, within the lock wait (or the guard's limit when
			// the wait has no bound of its own).
			retryUntil := deadline
			if !bounded {
				retryUntil = began.Add(c.guard.limit)
			}
			if !c.guard.retrySlow(err) || time.Until(retryUntil) <= 0 {
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
			if r, _, kind := c.classify([]byte(raw), nil); kind == readHit || kind == readStale {
				return r, l, true
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
	stop := c.keepAlive(heldBy(l, ks[0]))
	ld := c.callLoader(ctx, key)
	stop()
	r = result[V]{val: ld.val, err: ld.err, src: fromLoad}
	env, ttl, negative, ok := c.prepare(ld)
	if !ok || !l.Known() {
		c.unfilled(ctx, ks, l, r, ok, epoch)
		return r, false, false
	}
	expiry := time.Now().Add(ttl) // before the fill: L1 must not outlive the logical expiry
	res, err := c.fill(ctx, ks, l, env, ttl, negative)
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
// waiting for a load slot (WithMaxConcurrentLoads), and counts it. The
// slot wait is not part of the load timeout and ends only with ctx (the
// flight's: Close); a call nested in a loader's call (a loader that calls
// Get) uses its parent's slot. late reports that the loader returned after
// the timeout, when its result must not be cached: a load that old may
// have read data from before an Invalidate whose generation has since
// expired. ttl and skip are what the loader asked for with SetTTL.
func (c *Cache[K, V]) runLoader(ctx context.Context, call func(context.Context) error) (took time.Duration, late bool, ttl time.Duration, skip bool, err error) {
	if _, nested := ctx.Value(loadScopeKey{}).(*loadScope); c.loads != nil && !nested {
		if err := c.loads.Acquire(ctx, 1); err != nil {
			return 0, true, 0, false, fmt.Errorf("cacheaside: waiting for a load slot: %w", err)
		}
		defer c.loads.Release(1)
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.loadTimeout)
	defer cancel()
	scope := &loadScope{}
	lctx = context.WithValue(lctx, loadScopeKey{}, scope)
	c.stats.loads.Add(1)
	start := time.Now()
	err = callContained(lctx, call)
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

// errLoaderExited is the error of a load whose loader ended its goroutine
// with runtime.Goexit instead of returning.
var errLoaderExited = errors.New("cacheaside: loader called runtime.Goexit (t.FailNow or similar on a loader goroutine?)")

// callContained runs call, a loader call whose panics it recovers itself,
// on a goroutine of its own and waits for it, so that a runtime.Goexit in
// the loader (a test helper's FailNow) ends only that goroutine: it
// becomes the load's error instead of ending a flight's goroutine
// silently, which would hand its callers a zero value with a nil error or
// leave them, and Close, waiting for ever.
func callContained(ctx context.Context, call func(context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if !returned {
				done <- errLoaderExited
			}
		}()
		err := call(ctx)
		returned = true
		done <- err
	}()
	return <-done
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
	return c.l1.Epoch()
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
