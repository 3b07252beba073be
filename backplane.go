package cacheaside

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The backplane keeps the in-process caches of a fleet in step: Invalidate
// and Set on one process publish the value keys they touched on the Redis
// channel <prefix>invalidations, and every other process with
// WithLocalCache drops them from its L1 within a round trip, together with
// the results of reads of them that are in flight (see local). A message is
// "<origin>\n<value key>\n…"; a process ignores its own (it already dropped
// them). When the subscription drops, or a reconnect is needed, the process
// cannot know what it missed, so it marks its whole L1 unverified
// (local.unverify): healthy reads stop trusting it until entries are read
// again under the new subscription, while reads during a Redis outage
// still may use it.

// backplane holds the subscription so that Close can end it.
type backplane struct {
	mu     sync.Mutex
	sub    *redis.PubSub
	closed bool
}

// channel is the Redis pub/sub channel of this Cache's prefix.
func (c *Cache[K, V]) channel() string { return c.cfg.prefix + "invalidations" }

// startBackplane subscribes when L1 is on.
func (c *Cache[K, V]) startBackplane() {
	if c.l1 == nil {
		return
	}
	c.tracker.spawn() // New has not returned: nothing can be waiting yet
	go func() {
		defer c.tracker.done()
		for round := 0; c.life.Err() == nil; round++ {
			if c.listen() {
				round = 0
			}
			c.l1.unverify()
			sleep(c.life, min(100*time.Millisecond<<min(round, 4), 2*time.Second))
		}
	}()
}

// listen runs one subscription until it fails, and reports whether it got
// as far as being subscribed.
func (c *Cache[K, V]) listen() (subscribed bool) {
	sub := c.sub.Subscribe(c.life, c.channel())
	c.bp.mu.Lock()
	if c.bp.closed {
		c.bp.mu.Unlock()
		_ = sub.Close()
		return false
	}
	c.bp.sub = sub
	c.bp.mu.Unlock()
	defer func() {
		c.bp.mu.Lock()
		c.bp.sub = nil
		c.bp.mu.Unlock()
		_ = sub.Close()
	}()

	const idle = 2 * time.Second // ping an idle subscription this often
	pinged := false
	for c.life.Err() == nil {
		msg, err := sub.ReceiveTimeout(c.life, idle)
		if err != nil {
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() && !pinged {
				// Quiet channel: check the connection is alive. A second
				// timeout without the pong means it is not.
				pinged = sub.Ping(c.life) == nil
				if pinged {
					continue
				}
			}
			return subscribed
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				subscribed = true
				c.l1.verifyFromNow() // anything read before may have missed invalidations
			}
		case *redis.Message:
			c.applyInvalidation(m.Payload)
		}
	}
	return subscribed
}

// applyInvalidation drops the keys of a message from another process.
func (c *Cache[K, V]) applyInvalidation(payload string) {
	origin, keys, ok := strings.Cut(payload, "\n")
	if !ok || origin == c.tokenPrefix {
		return
	}
	c.l1.invalidate(strings.Split(keys, "\n")...)
	c.stats.localInvalidations.Add(1)
}

// publish tells the other processes to drop vkeys from their L1.
func (c *Cache[K, V]) publish(ctx context.Context, vkeys ...string) error {
	if c.l1 == nil {
		return nil
	}
	msg := c.tokenPrefix + "\n" + strings.Join(vkeys, "\n")
	// PUBLISH has no key: go-redis sends it to any node of a Cluster, so
	// it goes through the breaker of no particular node.
	return c.guard.do(ctx, "", func(ctx context.Context) error {
		return c.rdb.Publish(ctx, c.channel(), msg).Err()
	})
}

// stopBackplane ends the subscription; Close calls it before waiting.
func (c *Cache[K, V]) stopBackplane() {
	c.bp.mu.Lock()
	c.bp.closed = true
	sub := c.bp.sub
	c.bp.mu.Unlock()
	if sub != nil {
		_ = sub.Close()
	}
}
