package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// The fill protocol for a batch of keys, as GetMany and Warm run it: the
// same scripts and arguments as for one key (internal/protocol), sent in
// one pipeline per node, and the same settle for each key's fill.

// acquireBatch runs the acquire script for the items idx, in one pipeline
// per node. It answers items whose value appeared, and returns the items
// this call now holds the lock of, those it must leave to the single-key
// path, and those whose node could not be reached (down: load them without
// a lock and do not write them).
func (c *Cache[K, V]) acquireBatch(ctx context.Context, items []pendingKey[K, V], idx []int, results []result[V], leases []protocol.Lease) (locked, rest, down []int) {
	if len(idx) == 0 {
		return nil, nil, nil
	}
	tokens := make([]string, len(items))
	cmds := make([]*redis.Cmd, len(items))
	vkeys := make([]string, len(items))
	for i := range items {
		vkeys[i] = items[i].vkey
	}
	// A call the guard stopped waiting for may still take locks: give them
	// back (compare-and-delete, harmless where it took none).
	giveBack := func(sub []int) {
		var held []heldLock
		for _, i := range sub {
			if tokens[i] != "" {
				held = append(held, heldLock{tokens[i], items[i].vkey})
			}
		}
		c.releaseNowAll(held)
	}
	errOf, err := c.guard.PerNode(ctx, vkeys, idx, func(ctx context.Context, sub []int) error {
		return c.guard.PipelineScript(ctx, sub, func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
			if tokens[i] == "" {
				tokens[i] = c.newToken()
			}
			mode := protocol.ModeNormal
			if items[i].unreadable {
				mode = protocol.ModeForce
			}
			args := c.proto.AcquireArgs(tokens[i], mode, 0)
			if eval {
				return protocol.Acquire.Eval(ctx, p, protocol.KeysFor(items[i].vkey), args...)
			}
			return protocol.Acquire.EvalSha(ctx, p, protocol.KeysFor(items[i].vkey), args...)
		}, cmds)
	}, giveBack)
	if err != nil {
		c.redisError(err)
	}
	var giveUp []heldLock
	for _, i := range idx {
		if errors.Is(errOf[i], redisguard.ErrIncomplete) {
			// Not sent, or still running (giveBack runs when it ends).
			down = append(down, i)
			continue
		}
		if cmds[i] == nil || cmds[i].Err() != nil {
			// The call failed, but may have run on the server (a reply
			// lost to a timeout): give the lock back.
			if tokens[i] != "" {
				giveUp = append(giveUp, heldLock{tokens[i], items[i].vkey})
			}
			if cmds[i] == nil || redisguard.IsOutage(cmds[i].Err()) {
				down = append(down, i)
			} else {
				rest = append(rest, i)
			}
			continue
		}
		reply, _ := cmds[i].Slice()
		st, raw, l, perr := protocol.ParseAcquire(reply, tokens[i])
		switch {
		case perr != nil:
			rest = append(rest, i)
		case st == protocol.StateValue:
			if r, _, kind := c.classify([]byte(raw), nil); kind == readHit || kind == readStale {
				results[i] = r
			} else {
				rest = append(rest, i)
			}
		case st == protocol.StateAcquired:
			c.stats.lockAcquired.Add(1)
			leases[i] = l
			locked = append(locked, i)
		default:
			rest = append(rest, i) // someone else is loading it: wait for them
		}
	}
	c.releaseAll(giveUp)
	return locked, rest, down
}

// loadBatch calls the batch loader once for the items idx and fills them
// in one pipeline per node. It returns the items whose fill hit a conflict.
// stored, if not nil, is set for the items written to Redis.
func (c *Cache[K, V]) loadBatch(ctx context.Context, batch BatchLoadFunc[K, V], items []pendingKey[K, V], idx []int, results []result[V], leases []protocol.Lease, epoch uint64, stored []bool) (conflicts []int) {
	if len(idx) == 0 {
		return nil
	}
	keys := make([]K, len(idx))
	for j, i := range idx {
		keys[j] = items[i].key
	}
	var held []heldLock
	for _, i := range idx {
		held = append(held, heldBy(leases[i], items[i].vkey)...)
	}
	stop := c.keepAlive(held)
	var vals map[K]V
	took, late, ttl, skip, err := c.runLoader(ctx, func(ctx context.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = &PanicError{Value: p, Stack: stack()}
			}
		}()
		vals, err = batch(ctx, keys)
		return err
	})
	stop()
	type write struct {
		i        int
		env      []byte
		ttl      time.Duration
		negative bool
	}
	var writes []write
	for _, i := range idx {
		ld := loaded[V]{err: err, took: took, late: late, ttl: ttl, skip: skip}
		if err == nil {
			v, ok := vals[items[i].key]
			if ok {
				ld.val = v
			} else {
				ld.err = fmt.Errorf("key %v: %w", items[i].key, ErrNotFound)
			}
		}
		results[i] = result[V]{val: ld.val, err: ld.err, src: fromLoad}
		env, wttl, negative, ok := c.prepare(ld)
		if !ok || !leases[i].Known() {
			c.unfilled(ctx, protocol.KeysFor(items[i].vkey), leases[i], results[i], ok, epoch)
			continue
		}
		writes = append(writes, write{i, env, wttl, negative})
	}
	if len(writes) == 0 {
		return nil
	}
	cmds := make([]*redis.Cmd, len(writes))
	vkeys := make([]string, len(writes))
	for j, w := range writes {
		vkeys[j] = items[w.i].vkey
	}
	// A fill the guard stopped waiting for may never reach the server:
	// give its locks back (a fill that ran released them already).
	giveBack := func(sub []int) {
		var held []heldLock
		for _, j := range sub {
			if l := leases[writes[j].i]; l.Token != "" {
				held = append(held, heldLock{l.Token, vkeys[j]})
			}
		}
		c.releaseNowAll(held)
	}
	sent := time.Now() // L1 copies must not outlive the Redis entries
	errOf, _ := c.guard.PerNode(ctx, vkeys, nil, func(ctx context.Context, sub []int) error {
		return c.guard.PipelineScript(ctx, sub, func(p redis.Pipeliner, j int, eval bool) *redis.Cmd {
			w := writes[j]
			args := protocol.FillArgs(leases[w.i], w.env, c.physical(w.ttl, w.negative), w.negative)
			if eval {
				return protocol.Fill.Eval(ctx, p, protocol.KeysFor(vkeys[j]), args...)
			}
			return protocol.Fill.EvalSha(ctx, p, protocol.KeysFor(vkeys[j]), args...)
		}, cmds)
	}, giveBack)
	var giveUp []heldLock
	for j, w := range writes {
		var res int64
		cerr := errOf[j]
		if !errors.Is(cerr, redisguard.ErrIncomplete) && cmds[j] != nil {
			res, cerr = cmds[j].Int64()
		}
		if tok := leases[w.i].Token; tok != "" && lockLeft(cerr) {
			giveUp = append(giveUp, heldLock{tok, vkeys[j]})
		}
		conflict, ok := c.settle(items[w.i].vkey, results[w.i], sent.Add(w.ttl), protocol.FillResult(res), cerr, epoch)
		if conflict {
			conflicts = append(conflicts, w.i)
		} else if ok && stored != nil {
			stored[w.i] = true
		}
	}
	c.releaseAll(giveUp)
	return conflicts
}
