package cacheaside

import (
	"context"
	"slices"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
)

// prefillChunk is how many keys one prefill MGET round reads.
const prefillChunk = 500

// The prefill runs every half L1 TTL, within these bounds: often enough to
// pick up keys other processes warmed, and not constantly with a short L1
// TTL.
const (
	minPrefillEvery = 100 * time.Millisecond
	maxPrefillEvery = 5 * time.Second
)

// startPrefill starts the goroutine of WithLocalPrefill, when it applies.
func (c *Cache[K, V]) startPrefill() {
	if !c.cfg.localPrefill || c.l1 == nil || !c.warm.configured() {
		return
	}
	c.tracker.spawn() // New has not returned: nothing can be waiting yet
	go func() {
		defer c.tracker.done()
		t := time.NewTicker(min(max(c.cfg.localTTL/2, minPrefillEvery), maxPrefillEvery))
		defer t.Stop()
		for {
			c.prefill(c.life)
			select {
			case <-c.life.Done():
				return
			case <-t.C:
			case <-c.prefillKick:
			}
		}
	}()
}

// kickPrefill asks for a prefill round now, if WithLocalPrefill runs.
func (c *Cache[K, V]) kickPrefill() {
	select {
	case c.prefillKick <- struct{}{}:
	default:
	}
}

// prefill reads the warm-up keys from Redis into L1. Keys that are missing,
// unreadable or past their logical expiry are left out; a Redis fault ends
// nothing but this round's reads of the keys concerned.
func (c *Cache[K, V]) prefill(ctx context.Context) {
	keys := c.warm.keys
	if c.warm.list != nil {
		more, err := c.warm.list(ctx)
		if err == nil {
			keys = append(keys[:len(keys):len(keys)], more...)
		}
	}
	for chunk := range slices.Chunk(keys, prefillChunk) {
		if ctx.Err() != nil {
			return
		}
		vkeys := make([]string, len(chunk))
		for i, k := range chunk {
			vkeys[i] = protocol.ValueKey(c.cfg.prefix, c.encode(k))
		}
		epoch, m := c.localEpoch(), c.replay.Mark()
		raws, failed, err := c.mget(ctx, vkeys)
		if err != nil {
			c.redisError(err)
		}
		for i, vk := range vkeys {
			raw, err := redisguard.Reply(raws, failed, i)
			if r, h, kind := c.classify(vk, m, raw, err); kind == readHit {
				c.l1.refresh(vk, r, h.Expiry, epoch)
			}
		}
	}
}
