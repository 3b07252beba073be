package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// The backplane keeps the in-process caches of a fleet in step: Invalidate
// and Set on one process publish the value keys they touched on the Redis
// channel <prefix>invalidations, and every other process with
// WithLocalCache drops them from its L1 (internal/l1 holds the listener,
// the message format and the rules). A process ignores its own messages:
// it already dropped the keys. The Caches of a process that use one
// client share one subscription (one pub/sub connection). Each message is
// also kept in a Redis Stream named like the channel (about the last
// 10,000 of each prefix), so that a process whose subscription dropped
// applies exactly the invalidations it missed and keeps trusting the rest
// of its L1, instead of distrusting all of it.

// channel is the Redis pub/sub channel of this Cache's prefix.
func (c *Cache[K, V]) channel() string { return c.cfg.prefix + "invalidations" }

// startBackplane joins, when L1 is on, the subscription that every Cache
// on the same client shares (l1.Join): one pub/sub connection per client,
// subscribed to the channel of each Cache's prefix.
func (c *Cache[K, V]) startBackplane() {
	if c.l1 == nil {
		return
	}
	c.leaveBackplane = l1.Join(c.sub, c.channel(), l1.Handler{
		// Anything read before may have missed invalidations.
		OnSubscribed: c.l1.VerifyFromNow,
		OnDrop:       c.l1.Unverify,
		// Every invalidation missed while dropped was replayed from the
		// channel's stream: what was trusted before may be again, once
		// the subscription's lease holds (internal/l1, lease.go).
		OnResumed: func() {
			c.l1.Resume()
			c.resumed.Store(true)
		},
		OnLease: func(until time.Time) {
			c.l1.Lease(until)
			if c.resumed.CompareAndSwap(true, false) {
				c.stats.localResumes.Add(1)
			}
		},
		OnMessage: c.applyInvalidation,
		// Confirmations go only to reply keys of this prefix (confirm.go).
		ReplyPrefix: c.replyPrefix(),
		OnPanic: func(p any) {
			c.log(context.Background(), slog.LevelError, "cacheaside: backplane subscription panicked", "panic", fmt.Sprint(p))
		},
	})
}

// applyInvalidation drops the keys of a message from another process. A
// message it cannot read may have named any key: the whole L1 is then
// distrusted, as after a dropped subscription.
func (c *Cache[K, V]) applyInvalidation(payload string) {
	origin, keys, ok := l1.Decode(payload)
	switch {
	case !ok:
		c.l1.VerifyFromNow()
	case origin != c.tokenPrefix:
		if len(keys) == 1 && keys[0] == tagclock.ClearMarker(c.cfg.prefix) {
			// Another process cleared the prefix (or invalidated a
			// tag): reads from now on carry the clock, so that no copy
			// judged by the clock known before reaches the L1 after
			// this drop (tagclock.Lease).
			c.lease.Drop(tagclock.Now())
			c.l1.InvalidateAll()
			c.flights.ForgetAll()
		} else {
			c.l1.Invalidate(keys...)
		}
		c.stats.localInvalidations.Add(1)
	}
}

// publish tells the other processes to drop vkeys from their L1. A
// process without an L1 publishes too: the other processes of its fleet
// may keep one (a writer service without L1 beside readers with
// WithLocalFirst), and would otherwise serve the old value until their
// L1 TTL. With WithSyncInvalidation the message asks its receivers to
// confirm, and the delivery says where and how many (confirm.go).
func (c *Cache[K, V]) publish(ctx context.Context, vkeys ...string) (delivery, error) {
	// One script appends the message to the channel's stream (the key of
	// the same name) and publishes it with the entry's ID (internal/l1,
	// feed.go), on the node that holds the stream.
	ch := c.channel()
	// Each try delivers on its own (its reply key, the subscribers it
	// reached) and hands its delivery over whole: a try the guard
	// abandoned may still run after publish returned, and must not write
	// what publish returns (-race caught one doing so under load).
	var sent atomic.Pointer[delivery]
	var broken atomic.Pointer[error]
	// A try cut while Redis answered slowly is sent again (the guard's
	// DoPatient): a repeated message only makes the other processes drop
	// the same keys twice. Each try asks for confirmations on a reply key
	// of its own, so that the confirmations of an earlier try that ran
	// after all are not taken for this one's.
	err := c.guard.DoPatient(ctx, ch, func(ctx context.Context) error {
		var err error
		if c.confirmer != nil {
			// The script also returns the ids of the live subscribers,
			// whose confirmations the call waits for (confirm.go).
			d := delivery{reply: c.confirmer.Reply()}
			msg := l1.EncodeAsking(c.tokenPrefix, d.reply, vkeys)
			reply, rerr := l1.PublishLive.Run(ctx, c.rdb, []string{ch, l1.LiveKey(ch)}, l1.PublishArgs(ch, msg)...).Result()
			d.live, err = l1.PublishLiveResult(reply, rerr)
			if err == nil || errors.Is(err, l1.ErrFeedBroken) {
				sent.Store(&d) // published; a failed try delivered nothing
			}
		} else {
			reply, rerr := l1.Publish.Run(ctx, c.rdb, []string{ch}, l1.PublishArgs(ch, l1.Encode(c.tokenPrefix, vkeys))...).Result()
			_, err = l1.PublishResult(reply, rerr)
		}
		if errors.Is(err, l1.ErrFeedBroken) {
			broken.Store(&err)
			return nil // published: the other processes dropped the keys
		}
		return err
	})
	var d delivery
	if p := sent.Load(); p != nil {
		d = *p
	}
	if b := broken.Load(); err == nil && b != nil {
		// Not a Redis fault and nothing to replay: the message went out,
		// but the stream that lets a dropped subscriber catch up did not
		// take it, so such a subscriber distrusts its whole L1.
		c.stats.feedBroken.Add(1)
		c.log(ctx, slog.LevelError, "cacheaside: the invalidation stream key holds another type; L1 messages are sent without it, and other processes distrust their L1 after a dropped subscription",
			"key", ch, "error", (*b).Error())
	}
	return d, err
}

// stopBackplane leaves the shared subscription; Close calls it before
// closing the L1. The last Cache on a client to leave ends it.
func (c *Cache[K, V]) stopBackplane() {
	if c.leaveBackplane != nil {
		c.leaveBackplane()
	}
}
