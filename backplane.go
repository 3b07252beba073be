package cacheaside

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cacheaside/cacheaside/internal/l1"
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
		// channel's stream: what was trusted before may be again.
		OnResumed: func() {
			c.l1.Resume()
			c.stats.localResumes.Add(1)
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
		c.l1.Invalidate(keys...)
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
	var d delivery
	var msg []byte
	if c.confirmer != nil {
		d.reply = c.confirmer.Reply()
		msg = l1.EncodeAsking(c.tokenPrefix, d.reply, vkeys)
	} else {
		msg = l1.Encode(c.tokenPrefix, vkeys)
	}
	// One script appends the message to the channel's stream (the key of
	// the same name) and publishes it with the entry's ID (internal/l1,
	// feed.go), on the node that holds the stream.
	ch := c.channel()
	var receivers atomic.Int64 // an abandoned call may still write it
	err := c.guard.Do(ctx, ch, func(ctx context.Context) error {
		n, err := l1.Publish.Run(ctx, c.rdb, []string{ch}, l1.PublishArgs(ch, msg)...).Int64()
		receivers.Store(n)
		return err
	})
	d.receivers = receivers.Load()
	return d, err
}

// stopBackplane leaves the shared subscription; Close calls it before
// closing the L1. The last Cache on a client to leave ends it.
func (c *Cache[K, V]) stopBackplane() {
	if c.leaveBackplane != nil {
		c.leaveBackplane()
	}
}
