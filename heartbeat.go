package cacheaside

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// The fill lock's heartbeat. A lock's TTL only has to outlive a holder
// that died: while its load runs, the holder extends the lock every third
// of the lock TTL (compare-and-PEXPIRE: holdScript), so the lock never
// expires under a live load, however long the database takes, and the
// other processes keep waiting for its value instead of loading the key
// themselves. A holder that dies, freezes or loses Redis stops extending,
// and its lock expires within the lock TTL.

// keepAlive extends the fill locks held until stop is called, on a
// goroutine of the Cache that ends at stop or Close. A lock found no
// longer held (an Invalidate or Set deleted it, or it lapsed and another
// process took it) is dropped from the heartbeat. stop waits for the
// goroutine; call it when the load returns, before the fill.
func (c *Cache[K, V]) keepAlive(ctx context.Context, held []heldLock) (stop func()) {
	if len(held) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		defer close(done)
		t := time.NewTicker(max(c.cfg.lockTTL/3, time.Millisecond))
		defer t.Stop()
		for len(held) > 0 {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			held = c.extend(ctx, held)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// held returns the lock of lease l on the key whose value key is vkey, as
// keepAlive takes it: none for a load without the lock.
func (l lease) held(vkey string) []heldLock {
	if l.token == "" {
		return nil
	}
	return []heldLock{{l.token, vkey}}
}

// extend resets the TTL of the locks held to the lock TTL, in one pipeline
// per node, and returns those that may still be held: the ones extended
// and the ones whose call failed (the next beat tries again).
func (c *Cache[K, V]) extend(ctx context.Context, held []heldLock) []heldLock {
	vkeys := make([]string, len(held))
	for i, h := range held {
		vkeys[i] = h.vkey
	}
	cmds := make([]*redis.Cmd, len(held))
	ttl := c.cfg.lockTTL.Milliseconds()
	errOf, err := c.perNode(ctx, vkeys, nil, func(ctx context.Context, idx []int) error {
		return c.pipelineScript(ctx, holdScript, idx, func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
			if eval {
				return holdScript.Eval(ctx, p, keysFor(vkeys[i]), held[i].token, ttl)
			}
			return holdScript.EvalSha(ctx, p, keysFor(vkeys[i]), held[i].token, ttl)
		}, cmds)
	}, nil)
	if err != nil && ctx.Err() == nil {
		c.redisError(err)
	}
	var still []heldLock
	for i, h := range held {
		if errOf[i] != nil || cmds[i] == nil {
			still = append(still, h) // unknown (or the call is still running): try again
			continue
		}
		if n, err := cmds[i].Int64(); err != nil || n == 1 {
			still = append(still, h)
		}
	}
	return still
}
