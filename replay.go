package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cacheaside/cacheaside/internal/replay"
)

// Invalidations that could not be applied in Redis. An Invalidate or Set
// whose Redis call fails queues its keys (internal/replay) and returns an
// error matching ErrQueued; a goroutine of the Cache replays them as soon
// as Redis answers again, and until a key's invalidation is applied this
// process serves no Redis copy of it (vet, called by classify, which every
// path that serves a Redis read goes through).
//
// A queued Set is replayed as an invalidation (the value deleted, a new
// generation written), not as a write of its value: another process may
// have written a newer value since, which a late write would overwrite
// with an older one, while a deletion can only make the next Get load
// again.

// ErrQueued is matched (with errors.Is) by the error of a [Cache.Set] or
// [Cache.Invalidate] that could not be applied in Redis and was queued in
// this process instead: the Cache replays it as an invalidation (a Set's
// value is not written) as soon as Redis answers again, and serves no
// Redis copy of the key in this process until then. Such an error also
// matches [ErrRedisUnavailable] when Redis being unavailable caused it.
// See [Cache.Flush].
var ErrQueued = errors.New("cacheaside: queued for replay when Redis answers")

// replayMax bounds the keys whose invalidations wait for replay in one
// Cache: 10,000 value keys, a megabyte or two with keys of a few dozen
// bytes. Past it the oldest are dropped (Stats.InvalidationsDropped,
// logged at error level): other processes may serve their old Redis copy
// until its TTL.
const replayMax = 10_000

// replayBatch bounds the keys of one replay round: one pipeline per node.
const replayBatch = 256

// closeFlush bounds how long Close spends replaying what is queued: the
// longer of one second and the Redis timeout, plus the WAIT timeout of
// WithReplicaAcks, which a replay with a lagging replica waits out before
// it counts as applied, and that of WithSyncInvalidation, which a replay
// waits out for a process that does not confirm.
func closeFlush(cfg config) time.Duration {
	d := max(time.Second, cfg.redisTTL)
	if cfg.replicaAcks > 0 {
		d += cfg.replicaWait
	}
	return d + cfg.syncWait
}

// errPending is the read error of a key whose invalidation is queued: its
// Redis copy may predate the invalidation. Get answers it like an outage
// of Redis (the local copy or a load that writes nothing).
var errPending = fmt.Errorf("%w: an invalidation of the key is pending", ErrQueued)

// newReplay returns the Cache's queue of pending invalidations.
func (c *Cache[K, V]) newReplay() *replay.Queue {
	return replay.New(replay.Config{
		Max:   replayMax,
		Batch: replayBatch,
		Apply: c.applyQueued,
		Dropped: func(vkeys []string) {
			c.log(context.Background(), slog.LevelError,
				"cacheaside: invalidation queue full: dropped the oldest pending invalidations; other processes may serve their old values until the TTL",
				"dropped", len(vkeys), "first", vkeys[0], "bound", replayMax)
		},
	})
}

// applyQueued is the replay of queued invalidations: it applies them in
// Redis, as Invalidate does, and tells the other processes to drop the
// keys applied from their L1. A key applied on the primary but not
// confirmed by enough replicas (WithReplicaAcks) is applied, as for
// Invalidate; one whose message could not be published stays queued:
// without it, another process's L1 (and, after a dropped subscription,
// its resume from the invalidation stream) would keep the old value.
func (c *Cache[K, V]) applyQueued(ctx context.Context, vkeys []string) []error {
	errOf, err := c.lock.Invalidate(ctx, vkeys)
	if err != nil {
		c.redisError(err)
	}
	if errOf == nil {
		errOf = make([]error, len(vkeys))
	}
	errOf, _ = invalidated(errOf, err)
	var done []string
	for i, vk := range vkeys {
		if errOf[i] == nil {
			done = append(done, vk)
		}
	}
	if len(done) == 0 {
		return errOf
	}
	d, err := c.publish(ctx, done...)
	if err != nil {
		c.redisError(err)
		for i := range errOf {
			if errOf[i] == nil {
				errOf[i] = err
			}
		}
		return errOf
	}
	c.confirmReplayLater(ctx, d)
	return errOf
}

// startReplay starts the goroutine that replays queued invalidations.
func (c *Cache[K, V]) startReplay() {
	c.tracker.spawn() // New has not returned: nothing can be waiting yet
	go func() {
		defer c.tracker.done()
		c.replay.Run(c.life)
	}()
}

// queue queues the invalidations of vkeys that a Set or Invalidate could
// not apply (their call failed with err) and returns the error to return
// for them.
func (c *Cache[K, V]) queue(ctx context.Context, err error, vkeys ...string) error {
	c.replay.Add(vkeys...)
	return queuedErr(ctx, err)
}

// queuedErr is err, the error of a Redis call whose invalidations stay
// queued, marked with ErrQueued (and ErrRedisUnavailable when it applies).
func queuedErr(ctx context.Context, err error) error {
	return fmt.Errorf("%w (%w)", redisUnavailable(ctx, err), ErrQueued)
}

// vet is the check of every Redis read of vkey before it is served: raw
// and err are the read's reply, m the queue's mark taken before it was
// sent. A key whose invalidation is pending reads as errPending (a
// fault); one whose invalidation was applied while the read was out reads
// as missing, which sends Get to the lock script, which reads it again.
// With nothing queued it costs one atomic load.
func (c *Cache[K, V]) vet(vkey string, m replay.Mark, raw []byte, err error) ([]byte, error) {
	v := c.replay.Check(vkey, m)
	if v == replay.Clean {
		return raw, err
	}
	if err == nil {
		c.replay.Kick() // Redis answered: replay now
	}
	if v == replay.Pending {
		return nil, errPending
	}
	if err != nil {
		return raw, err
	}
	return nil, nil
}

// Flush replays the invalidations queued by Set and Invalidate calls that
// could not reach Redis (see [ErrQueued]) until none is left or ctx is
// done, retrying with a short backoff. It returns nil when none is left,
// else an error matching [ErrQueued] that says how many are left (and
// [ErrRedisUnavailable] when Redis being unavailable stopped them). The
// Cache replays them in the background anyway; Flush serves a caller that
// must know they are applied, such as a shutdown. Close calls it for up to
// a second (or the Redis timeout if longer).
func (c *Cache[K, V]) Flush(ctx context.Context) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	return c.flush(ctx)
}

// flush is Flush, for Close too.
func (c *Cache[K, V]) flush(ctx context.Context) error {
	if err := c.replay.Flush(ctx); err != nil {
		return fmt.Errorf("cacheaside: flush: %d invalidations left: %w", c.replay.Len(), queuedErr(ctx, err))
	}
	if err := c.replayConfirmed(ctx); err != nil {
		return fmt.Errorf("cacheaside: flush: replayed, still waiting for confirmations: %w", err)
	}
	return nil
}
