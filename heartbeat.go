package cacheaside

import (
	"sync"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// The fill lock's heartbeat. A lock's TTL only has to outlive a holder
// that died: while its load runs (or waits for a load slot), the holder
// extends the lock every third of the lock TTL (compare-and-PEXPIRE:
// protocol.Hold), so the lock never expires under a live load, however long
// the database takes, and the other processes keep waiting for its value
// instead of loading the key themselves. A holder that dies, freezes or
// loses Redis stops extending, and its lock expires within the lock TTL.
// The goroutine is the Cache's; its Redis work is protocol.Locker.Extend.
//
// One goroutine per Cache extends every lock the Cache holds, in one
// pipeline per node: an avalanche that queues thousands of loads costs
// Redis one round trip per node per beat, not one per lock.

// heartbeat is the set of fill locks a Cache holds for its loads in
// flight, and whether the goroutine that extends them runs.
type heartbeat struct {
	mu      sync.Mutex
	held    map[protocol.Held]struct{}
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
func (c *Cache[K, V]) keepAlive(held []protocol.Held) (stop func()) {
	if len(held) == 0 {
		return func() {}
	}
	hb := &c.hb
	hb.mu.Lock()
	if hb.held == nil {
		hb.held = make(map[protocol.Held]struct{})
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
		round := make([]protocol.Held, 0, len(hb.held))
		for h := range hb.held {
			round = append(round, h)
		}
		hb.mu.Unlock()
		lost := c.extendRound(round)
		hb.mu.Lock()
		for _, h := range lost {
			delete(hb.held, h)
		}
		hb.mu.Unlock()
		hb.busy.Unlock()
	}
}

// extendRound extends round's locks for beat, which holds hb.busy. A
// hook that ends the goroutine there (runtime.Goexit) would leave busy
// locked and the heartbeat marked running: every load's stop would wait
// for ever and no lock be extended again. So such an end releases busy
// and marks the heartbeat stopped, for the next load to start anew.
func (c *Cache[K, V]) extendRound(round []protocol.Held) []protocol.Held {
	hb := &c.hb
	returned := false
	defer func() {
		if !returned {
			hb.mu.Lock()
			hb.running = false
			hb.mu.Unlock()
			hb.busy.Unlock()
		}
	}()
	lost := c.lock.Extend(c.life, round)
	returned = true
	return lost
}
