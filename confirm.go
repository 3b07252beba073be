package cacheaside

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/redis/go-redis/v9"
)

// Fleet-synchronous invalidation (WithSyncInvalidation): Set and
// Invalidate return only once every live process has dropped the keys
// from its L1, or report how many did not confirm. The message to the
// other processes asks each subscription that receives it to confirm once
// it has handed it to every Cache of the channel; the script that
// publishes it returns the ids of the live subscriptions, and the call
// pops confirmations from a reply key of its own until each of them
// confirmed (internal/l1, confirm.go). A subscription is live while its
// lease in the registry of live subscribers holds (internal/l1,
// registry.go and lease.go); a process trusts its L1 on healthy reads
// only while its own lease holds, by its clock, ending before the
// registry's: one that is not live cannot serve the old value either.

// ErrNotConfirmed is matched (with errors.Is) by the error of a
// [Cache.Set] or [Cache.Invalidate] under [WithSyncInvalidation] that
// Redis applied and whose message reached the other processes, but that
// fewer of them confirmed within the timeout than received it (or ctx
// ended, or Close began, first). The error says how many did not. The
// change is in place in Redis and is not queued; a process that did not
// confirm may still serve its old L1 copy until the message reaches it.
// It does not match [ErrRedisUnavailable].
var ErrNotConfirmed = l1.ErrNotConfirmed

// confirmSlice bounds each wait for confirmations sent to Redis (BLMPOP),
// so that it stays within the client's read timeout and a wait that ends
// early (ctx, Close) leaves behind a call of at most this long.
const confirmSlice = 100 * time.Millisecond

// delivery is what publish tells the confirmation step: the reply key its
// message asked confirmations on ("" without WithSyncInvalidation) and
// the ids of the live subscriptions when it was published.
type delivery struct {
	reply string
	live  []string
}

// checkSyncInvalidation rejects WithSyncInvalidation on a Ring: its
// shards each have their own subscribers and registries. (On a Cluster
// PUBLISH reaches the subscribers of every node, and the registry of
// live subscribers shares its stream's slot: see internal/l1,
// registry.go.)
func checkSyncInvalidation(rdb redis.UniversalClient, cfg *config) error {
	if cfg.syncWait == 0 {
		return nil
	}
	switch rdb.(type) {
	case *redis.Ring:
		return fmt.Errorf("WithSyncInvalidation: not supported on a redis.Ring (each shard has its own subscribers)")
	}
	return nil
}

// newConfirmer returns the Cache's confirmation waiter, or nil without
// WithSyncInvalidation.
func (c *Cache[K, V]) newConfirmer() *l1.Confirmer {
	if c.cfg.syncWait == 0 {
		return nil
	}
	slice := confirmSlice
	if cl, ok := c.sub.(*redis.Client); ok {
		if rt := cl.Options().ReadTimeout; rt > 0 {
			slice = min(slice, rt/2)
		}
	}
	return &l1.Confirmer{
		Client:  c.sub,
		Prefix:  c.replyPrefix() + c.tokenPrefix,
		LiveKey: l1.LiveKey(c.channel()),
		Timeout: c.cfg.syncWait,
		Slice:   slice,
		Call:    c.guard.DoWaiting,
	}
}

// replyPrefix starts the reply keys of this Cache's prefix: the only
// keys its subscription confirms on.
func (c *Cache[K, V]) replyPrefix() string { return c.cfg.prefix + "ack:" }

// confirmed waits, under WithSyncInvalidation, until every subscriber
// that received the message of d confirmed it, for at most the option's
// timeout, ctx's end or Close.
func (c *Cache[K, V]) confirmed(ctx context.Context, d delivery) error {
	if c.confirmer == nil || len(d.live) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.life, cancel)()
	return c.confirmer.Wait(ctx, d.reply, d.live)
}

// confirmReplayLater waits for the confirmations of a replayed batch
// (confirmedReplay) on a goroutine of its own, so that the replay goes
// on with the next batch at once: with one instance that never confirms
// (an earlier version, a redis-cli SUBSCRIBE), waiting in turn cost each
// batch the whole timeout, up to 40 of them for a full queue, while its
// keys stayed pending. flush waits for these goroutines, Close too.
func (c *Cache[K, V]) confirmReplayLater(ctx context.Context, d delivery) {
	if c.confirmer == nil || len(d.live) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx) // a Flush's ctx may end first; the timeout and Close bound it
	c.tracker.spawn()                // the replay is tracked: see tracker.spawn
	c.replayAcks.Add(1)
	go func() {
		defer c.tracker.done()
		defer c.replayAcks.Done()
		c.confirmedReplay(ctx, d)
	}()
}

// replayConfirmed waits until every replayed batch's wait for
// confirmations ended, or ctx ends.
func (c *Cache[K, V]) replayConfirmed(ctx context.Context) error {
	done := make(chan struct{})
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		c.replayAcks.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// confirmedReplay is confirmed for a replayed invalidation: it is
// applied whether or not every process confirms, so a missing
// confirmation is logged, not retried.
func (c *Cache[K, V]) confirmedReplay(ctx context.Context, d delivery) {
	if err := c.confirmed(ctx, d); err != nil {
		c.log(ctx, slog.LevelWarn, "cacheaside: replayed invalidation not confirmed by every process", "err", err)
	}
}
