package cacheaside

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The backplane keeps the in-process caches of a fleet in step: Invalidate
// and Set on one process publish the value keys they touched on the Redis
// channel <prefix>invalidations, and every other process with
// WithLocalCache drops them from its L1 within a round trip, together with
// the results of reads of them that are in flight (see local). A process
// ignores its own messages (it already dropped the keys). When the
// subscription drops, or a reconnect is needed, the process cannot know
// what it missed, so it marks its whole L1 unverified (local.unverify):
// healthy reads stop trusting it until entries are read again under the
// new subscription, while reads during a Redis outage still may use it.
//
// Keys and prefixes may hold any byte, so a message is length-prefixed:
//
//	invFormat                      "\x00inv1"
//	uvarint len(origin), origin    the sender's token prefix
//	uvarint len(key), key          once per value key
//
// Earlier versions sent "<origin>\n<key>\n…", which cannot carry a
// newline and never starts with a NUL. A message in that format, or in
// none, may name any key: the process then marks its whole L1 unverified
// (local.verifyFromNow), as after a dropped subscription.
const invFormat = "\x00inv1"

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
			if c.listenSafely() {
				round = 0
			}
			c.l1.unverify()
			sleep(c.life, min(100*time.Millisecond<<min(round, 4), 2*time.Second))
		}
	}()
}

// listenSafely is listen, with a panic in it taken for a subscription
// that failed: the subscription dials a connection of its own through the
// client's hooks (a tracing hook may panic), on a goroutine of the cache,
// where an unrecovered panic would kill the process.
func (c *Cache[K, V]) listenSafely() (subscribed bool) {
	defer func() {
		if p := recover(); p != nil {
			c.log(context.Background(), slog.LevelError, "cacheaside: backplane subscription panicked", "panic", fmt.Sprint(p))
			subscribed = false
		}
	}()
	return c.listen()
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
	origin, keys, ok := decodeInvalidation(payload)
	switch {
	case !ok:
		c.l1.verifyFromNow()
	case origin != c.tokenPrefix:
		c.l1.invalidate(keys...)
		c.stats.localInvalidations.Add(1)
	}
}

// publish tells the other processes to drop vkeys from their L1. A
// process without an L1 publishes too: the other processes of its fleet
// may keep one (a writer service without L1 beside readers with
// WithLocalFirst), and would otherwise serve the old value until their
// L1 TTL.
func (c *Cache[K, V]) publish(ctx context.Context, vkeys ...string) error {
	msg := encodeInvalidation(c.tokenPrefix, vkeys)
	// PUBLISH has no key: go-redis sends it to any node of a Cluster, so
	// it goes through the breaker of no particular node.
	return c.guard.do(ctx, "", func(ctx context.Context) error {
		return c.rdb.Publish(ctx, c.channel(), msg).Err()
	})
}

// encodeInvalidation returns the message that names keys, sent by origin.
func encodeInvalidation(origin string, keys []string) []byte {
	n := len(invFormat) + binary.MaxVarintLen64 + len(origin)
	for _, k := range keys {
		n += binary.MaxVarintLen64 + len(k)
	}
	b := append(make([]byte, 0, n), invFormat...)
	b = binary.AppendUvarint(b, uint64(len(origin)))
	b = append(b, origin...)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

// decodeInvalidation reads a message of encodeInvalidation. ok is false
// when msg is in another format or cut short; the keys are substrings of
// msg.
func decodeInvalidation(msg string) (origin string, keys []string, ok bool) {
	rest, ok := strings.CutPrefix(msg, invFormat)
	if !ok {
		return "", nil, false
	}
	if origin, rest, ok = cutField(rest); !ok {
		return "", nil, false
	}
	for rest != "" {
		var k string
		if k, rest, ok = cutField(rest); !ok {
			return "", nil, false
		}
		keys = append(keys, k)
	}
	return origin, keys, true
}

// cutField splits a uvarint-length-prefixed field off the front of s.
func cutField(s string) (field, rest string, ok bool) {
	n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
	if w <= 0 || n > uint64(len(s)-w) {
		return "", "", false
	}
	return s[w : w+int(n)], s[w+int(n):], true
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
