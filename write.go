package cacheaside

import (
	"context"
	"errors"
	"fmt"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// The write path: Set and Invalidate replace or delete a key's value in
// Redis, delete its fill lock and write a new generation (protocol.Overwrite),
// so that no load in flight anywhere in the fleet writes an older value.

// Set stores value under key now, replacing what Redis holds, and makes any
// load of key in flight anywhere in the fleet discard its result instead of
// writing it. It returns an error when Redis could not be written; the
// key is dropped from this process's in-process cache either way. An error
// that Redis being unavailable caused matches [ErrRedisUnavailable].
//
// When the write fails, or its message to the other processes' local
// caches cannot be published, the key is queued for replay and the error
// also matches [ErrQueued]: as soon as Redis answers again the Cache
// deletes the key's value in Redis, fences the loads in flight and
// publishes the message, as Invalidate does (it does not write the value
// then: another process may have written a newer one since), and until
// then this process serves no Redis copy of the key. With
// [WithSyncInvalidation] it waits for the other processes' local caches as
// Invalidate does. On a single server or behind Sentinel, Set first
// reads the prefix's clock (one more round trip, see [Cache.Clear]), so
// that a Set made after a Clear or InvalidateTag returned, on any process,
// is served.
func (c *Cache[K, V]) Set(ctx context.Context, key K, value V) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	ttl := jittered(c.cfg.ttl, c.cfg.jitter)
	// Stamp the value with the clock as of now, not as of this process's
	// last read: a value stamped before a Clear that returned before this
	// Set would never be served (clear.go).
	c.syncClock(ctx)
	env, err := c.encodeValue(value, 0, ttl, c.clock.Clock(), nil)
	px := c.physical(ttl, false)
	if err != nil {
		return fmt.Errorf("cacheaside: set: %w", err)
	}
	vkey := protocol.ValueKey(c.cfg.prefix, c.encode(key))
	if c.l1 != nil {
		c.l1.Invalidate(vkey)
	}
	before := c.replay.Seq()
	err = c.lock.Overwrite(ctx, vkey, env, px)
	c.flights.Forget(vkey)
	if c.l1 != nil {
		c.l1.Invalidate(vkey)
	}
	// A write the primary applied but too few replicas confirmed
	// (WithReplicaAcks) is in place: nothing to replay.
	notReplicated := errors.Is(err, ErrNotReplicated)
	if err != nil && !notReplicated {
		c.redisError(err)
		return fmt.Errorf("cacheaside: set: %w", c.queue(ctx, err, vkey))
	}
	c.replay.Settled(before, vkey)
	d, perr := c.publish(ctx, vkey)
	if perr != nil {
		// Queued: the replay publishes it (and deletes the value).
		c.redisError(perr)
		return fmt.Errorf("cacheaside: set: stored, but other processes' local copies may be stale: %w", c.queue(ctx, perr, vkey))
	}
	var notReplicatedErr error
	if notReplicated {
		notReplicatedErr = err
	}
	if err := errors.Join(notReplicatedErr, c.confirmed(ctx, d)); err != nil {
		return fmt.Errorf("cacheaside: set: %w", err)
	}
	return nil
}

// Invalidate removes keys from Redis and from this process's in-process
// cache, tells the other processes to drop their in-process copies, and
// makes any load of them in flight anywhere in the fleet discard its result
// instead of writing it. Once Invalidate has returned nil, no Get started
// afterwards on this Cache returns a value loaded before it. On other
// processes the same holds for every Redis read sent after Invalidate
// returned; a Get there may still join a read or load that was already in
// flight, at most one round trip or one load old (see the README, also for
// the limits across a failover). When Redis cannot be written it still
// clears the local copies and returns an error, which matches
// [ErrRedisUnavailable] when Redis was unavailable: the shared copies may
// then be stale until the keys not invalidated are replayed. Those keys
// (all of them when the message to the other processes could not be
// published) are queued, and the error matches [ErrQueued]: the Cache applies their
// invalidations as soon as Redis answers again (or in [Cache.Flush]), and
// until then this process serves no Redis copy of them. The queue holds
// up to 10,000 keys; past that the oldest are dropped, logged and counted
// in [Stats].InvalidationsDropped, and for them the promise lapses until
// their TTL. With [WithSyncInvalidation] it returns only once every live
// process has dropped the keys from its local cache, so that the promise
// holds there too, or with an error matching [ErrNotConfirmed].
func (c *Cache[K, V]) Invalidate(ctx context.Context, keys ...K) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	if len(keys) == 0 {
		return nil
	}
	vkeys := make([]string, len(keys))
	for i, k := range keys {
		vkeys[i] = protocol.ValueKey(c.cfg.prefix, c.encode(k))
	}
	if c.l1 != nil {
		c.l1.Invalidate(vkeys...)
	}
	before := c.replay.Seq()
	errOf, err := c.lock.Invalidate(ctx, vkeys)
	for _, vk := range vkeys {
		c.flights.Forget(vk)
	}
	if c.l1 != nil {
		c.l1.Invalidate(vkeys...)
	}
	failedOf, notReplicated := invalidated(errOf, err)
	var done, failed []string
	for i, vk := range vkeys {
		if failedOf[i] == nil {
			done = append(done, vk)
		} else {
			failed = append(failed, vk)
		}
	}
	c.replay.Settled(before, done...)
	if len(failed) > 0 {
		c.redisError(err)
		return fmt.Errorf("cacheaside: invalidate: the shared copy may be stale (%d of %d keys not invalidated in Redis): %w", len(failed), len(vkeys), c.queue(ctx, err, failed...))
	}
	d, err := c.publish(ctx, vkeys...)
	if err != nil {
		// Queued: the replay invalidates them again and publishes.
		c.redisError(err)
		return fmt.Errorf("cacheaside: invalidate: other processes' local copies may be stale: %w", c.queue(ctx, err, vkeys...))
	}
	if err := errors.Join(notReplicated, c.confirmed(ctx, d)); err != nil {
		return fmt.Errorf("cacheaside: invalidate: %w", err)
	}
	return nil
}

// invalidated reads the outcome of Locker.Invalidate (errOf, err) for
// each key: failedOf[i] is nil where the key's invalidation is in place in
// Redis, else the error to queue it for. A key the primary applied but too
// few replicas confirmed (WithReplicaAcks) is in place; notReplicated is
// then one such error. A call that failed without saying which keys fails
// them all (replaying them is harmless).
func invalidated(errOf []error, err error) (failedOf []error, notReplicated error) {
	failedOf = make([]error, len(errOf))
	anyFailed := false
	for i, e := range errOf {
		switch {
		case e == nil:
		case errors.Is(e, ErrNotReplicated):
			notReplicated = e
		default:
			failedOf[i], anyFailed = e, true
		}
	}
	if err != nil && !anyFailed && notReplicated == nil {
		for i := range failedOf {
			failedOf[i] = err
		}
	}
	return failedOf, notReplicated
}
