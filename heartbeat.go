package cacheaside

import (
	"context"
	"sync"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/redis/go-redis/v9"
)

// The fill lock's heartbeat. A lock's TTL only has to outlive a holder
// that died: while its load runs (or waits for a load slot), the holder
// extends the lock every third of the lock TTL (compare-and-PEXPIRE:
// protocol.Hold), so the lock never expires under a live load, however long
// the database takes, and the other processes keep waiting for its value
// instead of loading the key themselves. A holder that dies, freezes or
// loses Redis stops extending, and its lock expires within the lock TTL.
//
// One goroutine per Cache extends every lock the Cache holds, in one
// pipeline per node: an avalanche that queues thousands of loads costs
// Redis one round trip per node per beat, not one per lock.

// heartbeat is the set of fill locks a Cache holds for its loads in
// flight, and whether the goroutine that extends them runs.
type heartbeat struct {
	mu      sync.Mutex
	held    map[heldLock]struct{}
	running bool
	// busy is held while a round of extensions is in flight, and by stop,
	// which must not remove locks from a round in flight (an extension
	// must not land after stop). Take busy before mu.
	busy sync.Mutex
}

// keepAlive extends the fill locks held until stop is called. A lock found
// no longer held (an Invalidate or Set deleted it, or it lapsed and
// another process took it) is dropped. stop waits for a round of
// extensions in flight, so that no extension lands after it; call it when
// the load returns, before the fill. It must be called from a goroutine
// the Cache's tracker knows.
func (c *Cache[K, V]) keepAlive(held []heldLock) (stop func()) {
	if len(held) == 0 {
		return func() {}
	}
	hb := &c.hb
	hb.mu.Lock()
	if hb.held == nil {
		hb.held = make(map[heldLock]struct{})
	}
	for _, h := range held {
		hb.held[h] = struct{}{}
	}
	start := !hb.running
	hb.running = true
	hb.mu.Unlock()
	if start {
		c.tracker.spawn()
		go c.beat()
	}
	return func() {
		hb.busy.Lock() // after a round in flight, which may include these locks
		hb.mu.Lock()
		for _, h := range held {
			delete(hb.held, h)
		}
		hb.mu.Unlock()
		hb.busy.Unlock()
	}
}

// beat extends the locks of the heartbeat every third of the lock TTL
// until none is left or the Cache is closed.
func (c *Cache[K, V]) beat() {
	defer c.tracker.done()
	hb := &c.hb
	t := time.NewTicker(max(c.cfg.lockTTL/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.life.Done():
			hb.mu.Lock()
			hb.running = false
			hb.mu.Unlock()
			return
		case <-t.C:
		}
		hb.busy.Lock() // busy before mu, in stop too
		hb.mu.Lock()
		if len(hb.held) == 0 {
			hb.running = false
			hb.mu.Unlock()
			hb.busy.Unlock()
			return
		}
		round := make([]heldLock, 0, len(hb.held))
		for h := range hb.held {
			round = append(round, h)
		}
		hb.mu.Unlock()
		lost := c.extend(c.life, round)
		hb.mu.Lock()
		for _, h := range lost {
			delete(hb.held, h)
		}
		hb.mu.Unlock()
		hb.busy.Unlock()
	}
}

// heldBy returns the lock of lease l on the key whose value key is vkey, as
// keepAlive takes it: none for a load without the lock.
func heldBy(l protocol.Lease, vkey string) []heldLock {
	if l.Token == "" {
		return nil
	}
	return []heldLock{{l.Token, vkey}}
}

// extend resets the TTL of the locks held to the lock TTL, in one pipeline
// per node, and returns those found no longer held. A lock whose call
// failed is not among them: the next beat tries again.
func (c *Cache[K, V]) extend(ctx context.Context, held []heldLock) (lost []heldLock) {
	vkeys := make([]string, len(held))
	for i, h := range held {
		vkeys[i] = h.vkey
	}
	cmds := make([]*redis.Cmd, len(held))
	ttl := c.cfg.lockTTL.Milliseconds()
	errOf, err := c.guard.PerNode(ctx, vkeys, nil, func(ctx context.Context, idx []int) error {
		return c.guard.PipelineScript(ctx, idx, func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
			if eval {
				return protocol.Hold.Eval(ctx, p, protocol.KeysFor(vkeys[i]), held[i].token, ttl)
			}
			return protocol.Hold.EvalSha(ctx, p, protocol.KeysFor(vkeys[i]), held[i].token, ttl)
		}, cmds)
	}, nil)
	if err != nil && ctx.Err() == nil {
		c.redisError(err)
	}
	for i, h := range held {
		if errOf[i] != nil || cmds[i] == nil {
			continue // the call failed or still runs: its reply must not be read
		}
		if n, err := cmds[i].Int64(); err == nil && n == 0 {
			lost = append(lost, h)
		}
	}
	return lost
}
