package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// Clear and the prefix's invalidation clock (internal/tagclock): Clear
// advances one key, every value records the clock its load began under,
// and Redis reads of values read the clock in the same MGET (on a
// Cluster, a replica of it on the values' node: clearcluster.go), so a
// value older than the last Clear is a miss, whatever key it is under.
// A Get's read goes without the clock while the process read it less
// than a millisecond before (tagclock.Lease); Clear returns 2 ms after it
// wrote the clock, when no process trusts an older one.

// ErrClearUnsupported is returned by [Cache.Clear] and [Cache.InvalidateTag]
// on a redis.Ring (see Clear).
var ErrClearUnsupported = errors.New("cacheaside: Clear and InvalidateTag are not supported on a redis.Ring")

// Clear makes everything this Cache's prefix stored before the call a miss,
// on every process, in O(1) Redis work: one script on one key, the clock
// key <prefix>{tags}:clock (on a Redis Cluster, then one more on each of
// its 256 replicas, pipelined per node). Once Clear has returned nil, no Get or
// GetMany started afterwards on any process returns a value loaded before
// the call from Redis, and this process's in-process cache holds none
// (on another process, as after Invalidate, a Get that joins a read or a
// load of its key already in flight there may answer with its result: a
// process without an L1 hears of no Clear, and one with it detaches its
// flights when the feed's message arrives, before Clear returns under
// WithSyncInvalidation); a
// load in flight during the call writes nothing that is served afterwards
// (see the README's consistency notes for the one case in which its bytes
// are written, never to be read). The other processes drop their
// in-process copies when the feed's message reaches them, as after
// Invalidate. Other prefixes are untouched. The values stay in Redis until
// their TTL or until a load replaces them.
//
// A Get reads the clock with its value unless its process read the clock
// less than a millisecond before, which spares most Gets of a busy
// process a part of their round trip. So Clear returns no sooner than 2
// ms after the clock is written, when no process goes by a clock read
// before it (the wait overlaps the message to the other processes).
//
// When Redis cannot be written, Clear returns an error, which matches
// [ErrRedisUnavailable] when Redis was unavailable; this process then
// serves no Redis copy of the prefix and writes none until a later Clear
// succeeds (call it again). Clear is not queued for replay.
//
// On a redis.Ring, Clear and InvalidateTag return [ErrClearUnsupported]:
// a Ring shards keys by their own hash, so no one key can be read beside
// every value, and a clock on one shard would not be seen by the reads of
// the others.
func (c *Cache[K, V]) Clear(ctx context.Context) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	return c.advanceClock(ctx, "clear", []string{c.clockKey}, "clear", nil)
}

// advanceClock runs the clock script (tagclock.Invalidate) on keys, the
// clock key and the keys of tags, in mode ("clear" or ""), for Clear and
// InvalidateTag: it drops this process's in-process copies and flights
// before and after, and publishes the message that makes the other
// processes drop theirs. Until the script has run, this process serves no
// Redis copy of the prefix. On a Cluster it then raises every clock
// replica (clearcluster.go) and succeeds only once all are written.
func (c *Cache[K, V]) advanceClock(ctx context.Context, what string, keys []string, mode string, tags []string) error {
	if c.clockKey == "" {
		return fmt.Errorf("cacheaside: %s: %w", what, ErrClearUnsupported)
	}
	all := mode == "clear"
	c.dropAllLocal()
	c.clock.Begin(all, tags)
	res, err := c.runClock(ctx, keys, mode)
	// Applied on the primary, too few replicas confirmed (WithReplicaAcks):
	// in place, reported at the end, as Set and Invalidate do.
	var notReplicated error
	if errors.Is(err, ErrNotReplicated) {
		notReplicated, err = err, nil
	}
	if err == nil {
		clock, cleared, _, perr := tagclock.Parse([]byte(res))
		if perr != nil {
			return fmt.Errorf("cacheaside: %s: %w", what, perr)
		}
		err = c.raiseReplicas(ctx, clock, cleared)
		if errors.Is(err, ErrNotReplicated) {
			notReplicated, err = errors.Join(notReplicated, err), nil
		}
	}
	c.dropAllLocal()
	if err != nil {
		c.redisError(err)
		return fmt.Errorf("cacheaside: %s: this process serves no Redis copy until it succeeds: %w", what, redisUnavailable(ctx, err))
	}
	// The clock is written (every replica): return no sooner than every
	// process's reads carry it (tagclock.Lease). The wait overlaps the
	// publication and its confirmations.
	defer tagclock.WaitSettled(tagclock.Now())
	if err := c.clock.Observe([]byte(res)); err != nil {
		return fmt.Errorf("cacheaside: %s: %w", what, err)
	}
	c.clock.Done(all, tags)
	d, err := c.publish(ctx, tagclock.ClearMarker(c.cfg.prefix))
	if err != nil {
		c.redisError(err)
		return fmt.Errorf("cacheaside: %s: other processes' local copies may be stale: %w", what, redisUnavailable(ctx, err))
	}
	// Under WithSyncInvalidation, wait for the fleet's L1s as Invalidate does.
	if err := errors.Join(notReplicated, c.confirmed(ctx, d)); err != nil {
		return fmt.Errorf("cacheaside: %s: %w", what, err)
	}
	return nil
}

// runClock runs the clock script (tagclock.Invalidate) on keys in mode
// and returns its reply, waiting for replicas under WithReplicaAcks
// (replicas.go). Patient without it (a try cut while Redis answered slowly
// is sent again): a clock advanced twice only invalidates once more what
// it invalidated.
func (c *Cache[K, V]) runClock(ctx context.Context, keys []string, mode string) (string, error) {
	if c.lock.Acked() {
		return c.runClockAcked(ctx, keys, mode)
	}
	var res string
	err := c.guard.DoPatient(ctx, c.clockKey, func(ctx context.Context) error {
		var err error
		res, err = tagclock.Invalidate.Run(ctx, c.rdb, keys, mode, c.clock.Clock()).Text()
		return err
	})
	if err != nil {
		return "", err // res may still be written by an abandoned call
	}
	return res, nil // the last try's: no try runs any more (redisguard's patiently)
}

// dropAllLocal drops every in-process copy and detaches every flight from
// later callers, so that no Get started after a Clear joins a read or load
// from before it.
func (c *Cache[K, V]) dropAllLocal() {
	c.flights.ForgetAll()
	if c.l1 != nil {
		c.l1.InvalidateAll()
	}
}

// current reports whether a value with header h may be served: loaded
// after the last Clear this process knows of, and after the last
// invalidation of each of its tags (tags.go). A value loaded at the clock
// known now needs no more: nothing was invalidated since.
func (c *Cache[K, V]) current(h envelope.Header) bool {
	switch {
	case c.clockKey == "":
		return true
	case !c.clock.Valid(h.Clock):
		return false
	case len(h.Tags) == 0 || h.Clock >= c.clock.Clock():
		return true
	}
	return c.tagsCurrent(h.Clock, h.Tags)
}

// mayFill reports whether the result of a load that began at clock,
// tagged tags (encoded), may be written: no Clear and no invalidation of
// its tags since. An untagged value of a process that knows of no clock
// of the prefix (it has read none: its first read creates one,
// clockloss.go) sends nothing (a value it writes after an invalidation it
// missed carries an older clock and is never served); else it reads the
// clock and the tags' versions first: one MGET without tags, one script
// that recreates the missing tag keys with them (fetchVersionsForFill).
// The tag keys are created even before the first Clear or InvalidateTag,
// so that the first one does not make every tagged value a miss (a
// missing tag key means "unknown": see tagclock.Unknown), and kept for at
// least keep, the physical TTL of the values to be written. err is the
// Redis error that kept it from reading them: the fill cannot be sent
// either, and that is an outage, not a Clear (see unfilled).
func (c *Cache[K, V]) mayFill(ctx context.Context, clock uint64, tags []byte, keep time.Duration) (ok bool, err error) {
	if c.clockKey == "" || c.clock.Clock() == 0 && len(tags) == 0 {
		return true, nil
	}
	var names []string
	for t := range envelope.TagsOf(tags) {
		names = append(names, string(t))
	}
	fetch := c.fetchVersions // no tag: only the clock, in one MGET
	if len(names) > 0 {
		fetch = func(ctx context.Context, names []string) ([]uint64, error) {
			return c.fetchVersionsForFill(ctx, clock, names, keep)
		}
	}
	vers, err := fetch(ctx, names)
	if err != nil {
		return false, err
	}
	if !c.clock.Valid(clock) {
		return false, nil
	}
	for _, v := range vers {
		if v > clock {
			return false, nil
		}
	}
	return true, nil
}

// mget is guard.MGet of vkeys, with the clock key read in the same MGET
// (on a Cluster, each node's replica in that node's call). A value whose
// clock read failed has failed too: it cannot be judged.
func (c *Cache[K, V]) mget(ctx context.Context, vkeys []string) (out [][]byte, failed []error, err error) {
	keys, clockOf := c.withClocks(vkeys)
	out, failed, err = c.guard.MGet(ctx, keys)
	n := len(vkeys)
	for j := n; j < len(keys); j++ {
		if failed == nil || failed[j] == nil {
			c.observeClock(keys[j], out[j])
		}
	}
	if failed != nil {
		for i, j := range clockOf {
			if failed[i] == nil {
				failed[i] = failed[j]
			}
		}
		failed = failed[:n]
	}
	return out[:n], failed, err
}
