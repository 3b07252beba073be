package cacheaside

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// The fill lock. On a miss one process of the fleet takes the key's lock
// (SET NX PX, with a token unique to it), loads, and fills conditionally;
// the others wait for its value, taking the lock over when a dead
// holder's lock expires. The lock is an efficiency mechanism: correctness
// rests on the generation fence every fill checks (internal/protocol, where
// the scripts, the key layout and their arguments are written once). This
// file is the Redis I/O around those scripts, through the guard: acquire,
// fill, release and hold, and giving back locks whose calls failed or were
// abandoned, so that no key stays locked for a whole lock TTL.

// acquire runs protocol.Acquire. For protocol.StateValue it returns the
// raw value.
func (c *Cache[K, V]) acquire(ctx context.Context, ks protocol.Keys, token string, force bool) (protocol.State, string, protocol.Lease, error) {
	mode := protocol.ModeNormal
	if force {
		mode = protocol.ModeForce
	}
	return c.acquireMode(ctx, ks, token, mode, 0)
}

// acquireMode runs protocol.Acquire in the given mode.
// For protocol.ModeRefresh, freshAfter is the remaining life above which the value
// counts as already refreshed.
func (c *Cache[K, V]) acquireMode(ctx context.Context, ks protocol.Keys, token, mode string, freshAfter time.Duration) (protocol.State, string, protocol.Lease, error) {
	var res []any
	get := func(ctx context.Context) error {
		var err error
		res, err = protocol.Acquire.Run(ctx, c.rdb, ks, c.proto.AcquireArgs(token, mode, freshAfter)...).Slice()
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
		if st, _, _, err := protocol.ParseAcquire(res, token); err != nil || st == protocol.StateAcquired {
			c.releaseNow(token, ks)
		}
	}
	err := c.guard.DoUndo(ctx, ks[0], get, undo)
	if err != nil && c.guard.HonoursDeadlines() && !errors.Is(err, redisguard.ErrSkipped) {
		c.release(context.WithoutCancel(ctx), ks, token)
	}
	if err != nil {
		return 0, "", protocol.Lease{}, err
	}
	st, raw, l, err := protocol.ParseAcquire(res, token)
	l.Replace = mode == protocol.ModeRefresh
	return st, raw, l, err
}

// fill runs protocol.Fill for an encoded envelope whose logical TTL is ttl.
func (c *Cache[K, V]) fill(ctx context.Context, ks protocol.Keys, l protocol.Lease, env []byte, ttl time.Duration, negative bool) (protocol.FillResult, error) {
	var n int64
	run := func(ctx context.Context) error {
		var err error
		n, err = protocol.Fill.Run(ctx, c.rdb, ks, protocol.FillArgs(l, env, c.physical(ttl, negative), negative)...).Int64()
		return err
	}
	// A fill that fails may never have reached the server (a pool wait cut
	// short, a dropped connection), leaving the lock for its whole TTL. Give
	// it back: compare-and-delete is harmless if the fill did run, since a
	// fill that ran deleted the lock or found it was no longer ours.
	undo := func() {
		if l.Token != "" {
			c.releaseNow(l.Token, ks)
		}
	}
	err := c.guard.DoUndo(ctx, ks[0], run, undo)
	if err != nil {
		if l.Token != "" && lockLeft(err) {
			c.release(ctx, ks, l.Token)
		}
		return 0, err // n may still be written by an abandoned call
	}
	return protocol.FillResult(n), nil
}

// releaseNow releases a lock from a goroutine that must not wait on the
// guard (an abandoned call completing late): directly, for up to the lock
// TTL, after which the lock is gone anyway. The pool may be busy with
// other late calls, so the Redis timeout would be too short to get a
// connection.
func (c *Cache[K, V]) releaseNow(token string, ks protocol.Keys) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.lockTTL)
	defer cancel()
	_ = c.guard.Bypass(ctx, func(ctx context.Context) error { return protocol.Release.Run(ctx, c.rdb, ks, token).Err() })
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
	_ = c.guard.Bypass(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range held {
				protocol.Release.Eval(ctx, p, protocol.KeysFor(h.vkey), h.token)
			}
			return nil
		})
		return err
	})
}

// giveBack returns the lock of l, if any, after a load that wrote
// nothing: it holds it for l.HoldOnError after a loader error, and
// releases it otherwise.
func (c *Cache[K, V]) giveBack(ctx context.Context, ks protocol.Keys, l protocol.Lease, loadErr error) {
	switch {
	case l.Token == "":
	case l.HoldOnError > 0 && loadErr != nil && !errors.Is(loadErr, ErrNotFound):
		_ = c.guard.Do(context.WithoutCancel(ctx), ks[0], func(ctx context.Context) error {
			return protocol.Hold.Run(ctx, c.rdb, ks, l.Token, l.HoldOnError.Milliseconds()).Err()
		})
	default:
		c.release(ctx, ks, l.Token)
	}
}

// release gives the lock back after a load that wrote nothing, so that
// waiters take over at once instead of after the lock TTL.
func (c *Cache[K, V]) release(ctx context.Context, ks protocol.Keys, token string) {
	// Not cancelled with the load: a lock left behind would stall the key
	// for a whole lock TTL.
	ctx = context.WithoutCancel(ctx)
	err := c.guard.Do(ctx, ks[0], func(ctx context.Context) error {
		return protocol.Release.Run(ctx, c.rdb, ks, token).Err()
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
	return err != nil && (!errors.Is(err, redisguard.ErrIncomplete) || errors.Is(err, redisguard.ErrSkipped))
}

// newToken returns a token unique to this process and call: a random
// per-Cache prefix and a counter. Lock tokens and generations use it.
func (c *Cache[K, V]) newToken() string {
	return c.tokenPrefix + strconv.FormatUint(c.tokenSeq.Add(1), 36)
}
