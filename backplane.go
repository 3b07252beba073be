package cacheaside

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cacheaside/cacheaside/internal/l1"
)

// The backplane keeps the in-process caches of a fleet in step: Invalidate
// and Set on one process publish the value keys they touched on the Redis
// channel <prefix>invalidations, and every other process with
// WithLocalCache drops them from its L1 (internal/l1 holds the listener,
// the message format and the rules). A process ignores its own messages:
// it already dropped the keys. The Caches of a process that use one
// client share one subscription (one pub/sub connection).

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
		OnMessage:    c.applyInvalidation,
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
// L1 TTL.
func (c *Cache[K, V]) publish(ctx context.Context, vkeys ...string) error {
	msg := l1.Encode(c.tokenPrefix, vkeys)
	// PUBLISH has no key: go-redis sends it to any node of a Cluster, so
	// it goes through the breaker of no particular node.
	return c.guard.Do(ctx, "", func(ctx context.Context) error {
		return c.rdb.Publish(ctx, c.channel(), msg).Err()
	})
}

// stopBackplane leaves the shared subscription; Close calls it before
// closing the L1. The last Cache on a client to leave ends it.
func (c *Cache[K, V]) stopBackplane() {
	if c.leaveBackplane != nil {
		c.leaveBackplane()
	}
}
