package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts below are the whole protocol between the processes of a
// fleet. Each touches the three keys of one cache key (value, lock,
// generation; see keys.go), which share a hash tag, so each runs on one
// Redis Cluster slot. go-redis's Script.Run sends EVALSHA and falls back to
// EVAL on NOSCRIPT, so a Redis that restarted without its script cache
// costs one extra round trip, not an error.

// acquireScript re-reads the value and, if there is none, tries to take the
// fill lock. ARGV[1] is the caller's token, ARGV[2] the lock TTL and
// ARGV[5] the generation TTL, in milliseconds. It returns {0, value} when
// a value exists, {1, gen} when this caller took the lock, and {2, gen}
// when someone else holds it.
//
// gen is the fence of a later conditional fill (fillScript): the key's
// generation, which the script creates when there is none (with the
// caller's token: unique, so a generation never comes back once replaced,
// expired or evicted). Every lease thus carries a generation, and a fill
// that no longer finds it is refused. Taking the lock also extends the
// generation to the generation TTL, so that it outlives any load that
// relies on it. A generation of another Redis type than a string (no
// process wrote it) is replaced like a missing one.
//
// A lock key that no process of the cache wrote (one without a TTL, which
// every lock taken here has, or of another Redis type) would never be
// released: it is taken over as if free.
//
// ARGV[3] is the mode: "0" normal (a value of another Redis type than a
// string is unreadable: it is treated as in mode "1"); "1" the existing
// value is ignored (it was unreadable) and deleted once the lock is taken;
// "2" (early refresh) the existing value is ignored and kept, so readers
// go on getting it during the load, unless it lives longer than ARGV[4]
// ms: then another process refreshed it since the caller read it, and the
// reply is {3, ""}.
var acquireScript = redis.NewScript(`
local mode = ARGV[3]
if mode == '0' then
  local v = redis.pcall('GET', KEYS[1])
  if type(v) == 'string' then return {0, v} end
  if type(v) == 'table' and v.err then mode = '1' end
elseif mode == '2' and redis.call('PTTL', KEYS[1]) > tonumber(ARGV[4]) then
  return {3, ''}
end
local g = redis.pcall('GET', KEYS[3])
if type(g) ~= 'string' then
  g = ARGV[1]
  redis.call('SET', KEYS[3], g, 'PX', ARGV[5])
end
local took = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
if not took and (redis.call('PTTL', KEYS[2]) == -1 or redis.call('TYPE', KEYS[2]).ok ~= 'string') then
  took = redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
if took then
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  if mode == '1' then redis.call('DEL', KEYS[1]) end
  return {1, g}
end
return {2, g}
`)

// fillScript writes a loaded value only if nothing invalidated the key since
// the load began: the generation must still be ARGV[2], the one the
// acquire gave the load. Invalidate and Set replace the generation, and an
// evicted or expired one never comes back (acquireScript), so a fill after
// any of them is refused, whatever else Redis evicted. The lock token
// ARGV[1] (empty for a load without the lock) only chooses how to write:
// the holder overwrites and releases the lock; any other load writes only
// if no value exists. With ARGV[5] = "1" the holder too keeps an existing
// value: a not-found marker from a load that began on a miss must not hide
// a row that a load begun later found and stored. (A refresh or stale
// reload passes "0": the value it finds is the one it reloads, and a row
// deleted since must replace it.) A refused fill still releases the
// caller's lock, so that a redo or another process can take it at once.
//
// It returns 1 (written, lock released), 2 (written without the lock),
// 3 (not written: another fill got there first, the load is still fresh)
// or 0 (not written: the key was invalidated or set during the load, or
// its generation evicted).
var fillScript = redis.NewScript(`
local mine = ARGV[1] ~= '' and redis.pcall('GET', KEYS[2]) == ARGV[1]
if redis.pcall('GET', KEYS[3]) ~= ARGV[2] then
  if mine then redis.call('DEL', KEYS[2]) end
  return 0
end
if mine then
  if ARGV[5] == '1' then
    redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[4])
  else
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  end
  redis.call('DEL', KEYS[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[4]) then return 2 end
return 3
`)

// releaseScript deletes the lock only if it still holds this caller's
// token: compare-and-delete, never a plain DEL.
var releaseScript = redis.NewScript(`
if redis.pcall('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
`)

// holdScript extends the lock to ARGV[2] ms if it still holds token ARGV[1].
var holdScript = redis.NewScript(`
if redis.pcall('GET', KEYS[2]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
`)

// overwriteScript is Invalidate (ARGV[1] = "") and Set (ARGV[1] = the new
// envelope, ARGV[2] its PX): it replaces or deletes the value, deletes the
// lock so that an in-flight fill fails its condition, and writes a new
// generation ARGV[3] that lives ARGV[4] ms.
var overwriteScript = redis.NewScript(`
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1
`)

// acquireState is what acquireScript found.
type acquireState int64

const (
	stateValue    acquireState = 0
	stateAcquired acquireState = 1
	stateLocked   acquireState = 2
	stateFresh    acquireState = 3 // early refresh: someone else already did it
)

// lease is what a load needs to fill conditionally: the lock token (empty
// when the load runs without the lock) and the generation read before the
// load began. The zero lease (Redis was unreachable) fences nothing: its
// load's result is returned but not written.
type lease struct {
	token string
	gen   string
	// replace is set when the lock was taken to reload a value kept in
	// place (early refresh, stale reload): the fill replaces that value
	// even with a not-found marker.
	replace bool
	// holdOnError, if not zero, is how long the lock stays held after a
	// load that failed (stale reloads: it throttles the fleet's retries
	// of a failing loader); otherwise the lock is released at once.
	holdOnError time.Duration
}

// known reports whether l was read from Redis, so that a fill under it can
// be fenced by its generation.
func (l lease) known() bool { return l.gen != "" }

// acquire runs acquireScript. For stateValue it returns the raw value.
func (c *Cache[K, V]) acquire(ctx context.Context, ks keys, token string, force bool) (acquireState, string, lease, error) {
	mode := acquireNormal
	if force {
		mode = acquireForce
	}
	return c.acquireMode(ctx, ks, token, mode, 0)
}

// Modes of acquireScript.
const (
	acquireNormal  = "0"
	acquireForce   = "1"
	acquireRefresh = "2"
)

// acquireMode runs acquireScript in the given mode.
// For acquireRefresh, freshAfter is the remaining life above which the value
// counts as already refreshed.
func (c *Cache[K, V]) acquireMode(ctx context.Context, ks keys, token, mode string, freshAfter time.Duration) (acquireState, string, lease, error) {
	var res []any
	get := func(ctx context.Context) error {
		var err error
		res, err = acquireScript.Run(ctx, c.rdb, ks, c.acquireArgs(token, mode, freshAfter)...).Slice()
		return err
	}
	// A call the guard stopped waiting for may still take the lock: give it
	// back when it does, or the key would stall every process for a whole
	// lock TTL. On the abandoning path undo runs when the late call
	// completes; with a client that honours deadlines the request may have
	// reached the server, so release now (compare-and-delete: harmless if
	// the lock was never taken).
	undo := func() {
		// Release unless the reply proves the lock was not taken: a call
		// that failed late may still have run on the server.
		if st, _, _, err := parseAcquire(res, token); err != nil || st == stateAcquired {
			c.releaseNow(token, ks)
		}
	}
	err := c.guard.doUndo(ctx, ks[0], get, undo)
	if err != nil && c.guard.inline && !errors.Is(err, errSkipped) {
		c.release(context.WithoutCancel(ctx), ks, token)
	}
	if err != nil {
		return 0, "", lease{}, err
	}
	st, raw, l, err := parseAcquire(res, token)
	l.replace = mode == acquireRefresh
	return st, raw, l, err
}

// acquireArgs returns the ARGV of acquireScript: the one place they are
// built, for single keys and batches.
func (c *Cache[K, V]) acquireArgs(token, mode string, freshAfter time.Duration) []any {
	return []any{token, c.cfg.lockTTL.Milliseconds(), mode, freshAfter.Milliseconds(), c.genTTL.Milliseconds()}
}

// parseAcquire reads the reply of acquireScript called with token.
func parseAcquire(res []any, token string) (acquireState, string, lease, error) {
	if len(res) < 2 {
		return 0, "", lease{}, fmt.Errorf("cacheaside: acquire: unexpected reply %v", res)
	}
	st, _ := res[0].(int64)
	s, _ := res[1].(string)
	switch acquireState(st) {
	case stateValue, stateFresh:
		return acquireState(st), s, lease{}, nil
	case stateAcquired, stateLocked:
	default:
		return 0, "", lease{}, fmt.Errorf("cacheaside: acquire: unexpected reply %v", res)
	}
	if s == "" {
		return 0, "", lease{}, fmt.Errorf("cacheaside: acquire: no generation in reply %v", res)
	}
	l := lease{gen: s}
	if acquireState(st) == stateAcquired {
		l.token = token
	}
	return acquireState(st), "", l, nil
}

// fillResult is what fillScript did.
type fillResult int64

const (
	fillConflict  fillResult = 0
	fillLocked    fillResult = 1
	fillUnlocked  fillResult = 2
	fillPreempted fillResult = 3
)

// fill runs fillScript for an encoded envelope whose logical TTL is ttl.
func (c *Cache[K, V]) fill(ctx context.Context, ks keys, l lease, env []byte, ttl time.Duration, negative bool) (fillResult, error) {
	var n int64
	run := func(ctx context.Context) error {
		var err error
		n, err = fillScript.Run(ctx, c.rdb, ks, c.fillArgs(l, env, ttl, negative)...).Int64()
		return err
	}
	// A fill that fails may never have reached the server (a pool wait cut
	// short, a dropped connection), leaving the lock for its whole TTL. Give
	// it back: compare-and-delete is harmless if the fill did run, since a
	// fill that ran deleted the lock or found it was no longer ours.
	undo := func() {
		if l.token != "" {
			c.releaseNow(l.token, ks)
		}
	}
	err := c.guard.doUndo(ctx, ks[0], run, undo)
	if err != nil {
		if l.token != "" && lockLeft(err) {
			c.release(ctx, ks, l.token)
		}
		return 0, err // n may still be written by an abandoned call
	}
	return fillResult(n), nil
}

// fillArgs returns the ARGV of fillScript for an envelope whose logical
// TTL is ttl, filled under l: the one place they are built, for single
// keys and batches.
func (c *Cache[K, V]) fillArgs(l lease, env []byte, ttl time.Duration, negative bool) []any {
	keep := "0"
	if negative && !l.replace {
		keep = "1"
	}
	return []any{l.token, l.gen, env, c.physical(ttl, negative).Milliseconds(), keep}
}

// releaseNow releases a lock from a goroutine that must not wait on the
// guard (an abandoned call completing late): directly, for up to the lock
// TTL, after which the lock is gone anyway. The pool may be busy with
// other late calls, so the Redis timeout would be too short to get a
// connection.
func (c *Cache[K, V]) releaseNow(token string, ks keys) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.lockTTL)
	defer cancel()
	_ = callSafely(ctx, func(ctx context.Context) error { return releaseScript.Run(ctx, c.rdb, ks, token).Err() })
}

// heldLock is a fill lock to give back: its token and value key.
type heldLock struct{ token, vkey string }

// releaseAll gives back locks whose Redis call failed, in the background
// and past the guard (this process's breaker may be open, or the call
// lost, while other processes reach Redis fine and would wait for these
// locks for a whole lock TTL), one pipeline for all. When too many
// releases are already running it gives up: the locks then expire after
// the lock TTL.
func (c *Cache[K, V]) releaseAll(held []heldLock) {
	if len(held) == 0 {
		return
	}
	select {
	case c.releaseSlots <- struct{}{}:
	default:
		return
	}
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		defer func() { <-c.releaseSlots }()
		c.releaseNowAll(held)
	}()
}

// releaseNowAll gives back held on the calling goroutine, past the guard,
// in one pipeline (compare-and-delete: harmless for a lock that was never
// taken or is no longer ours).
func (c *Cache[K, V]) releaseNowAll(held []heldLock) {
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.lockTTL)
	defer cancel()
	_ = callSafely(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range held {
				releaseScript.Eval(ctx, p, keysFor(h.vkey), h.token)
			}
			return nil
		})
		return err
	})
}

// giveBack returns the lock of l, if any, after a load that wrote
// nothing: it holds it for l.holdOnError after a loader error, and
// releases it otherwise.
func (c *Cache[K, V]) giveBack(ctx context.Context, ks keys, l lease, loadErr error) {
	switch {
	case l.token == "":
	case l.holdOnError > 0 && loadErr != nil && !errors.Is(loadErr, ErrNotFound):
		_ = c.guard.do(context.WithoutCancel(ctx), ks[0], func(ctx context.Context) error {
			return holdScript.Run(ctx, c.rdb, ks, l.token, l.holdOnError.Milliseconds()).Err()
		})
	default:
		c.release(ctx, ks, l.token)
	}
}

// release gives the lock back after a load that wrote nothing, so that
// waiters take over at once instead of after the lock TTL.
func (c *Cache[K, V]) release(ctx context.Context, ks keys, token string) {
	// Not cancelled with the load: a lock left behind would stall the key
	// for a whole lock TTL.
	ctx = context.WithoutCancel(ctx)
	err := c.guard.do(ctx, ks[0], func(ctx context.Context) error {
		return releaseScript.Run(ctx, c.rdb, ks, token).Err()
	})
	if err != nil {
		c.redisError(err)
		c.releaseAll([]heldLock{{token, ks[0]}})
	}
}

// lockLeft reports whether a fill lock may still be held after a fill
// call that failed with err: it failed outright (an error reply, a
// timeout on a client that honours deadlines) or was never sent. A call
// still running past the budget is left to its undo.
func lockLeft(err error) bool {
	return err != nil && (!errors.Is(err, errIncomplete) || errors.Is(err, errSkipped))
}

// overwriteArgs returns the ARGV of overwriteScript; env nil means
// Invalidate.
func (c *Cache[K, V]) overwriteArgs(env []byte, ttl time.Duration) []any {
	var val any = ""
	if env != nil {
		val = env
	}
	return []any{val, ttl.Milliseconds(), c.newToken(), c.genTTL.Milliseconds()}
}

// newToken returns a token unique to this process and call: a random
// per-Cache prefix and a counter. Lock tokens and generations use it.
func (c *Cache[K, V]) newToken() string {
	return c.tokenPrefix + strconv.FormatUint(c.tokenSeq.Add(1), 36)
}
