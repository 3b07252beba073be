package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cacheaside/cacheaside/internal/flight"
	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// WithBatchLoader sets the loader [Cache.GetMany] calls once for all the
// keys of a batch that missed. Its type parameters must match the Cache's;
// New reports a mismatch. Keys missing from its map do not exist and are
// remembered as not found; an error fails every key of the batch and is
// never remembered as not found.
//
// Default: none; GetMany then calls the LoadFunc for each missing key, at
// most 16 at a time.
func WithBatchLoader[K comparable, V any](load BatchLoadFunc[K, V]) Option {
	return func(c *config) { c.batchLoad = load }
}

// getManyConcurrency bounds the single-key loads of a GetMany without a
// batch loader.
const getManyConcurrency = 16

// GetMany returns the values of keys: the ones in Redis with one MGET (on a
// Redis Cluster, one MGET per hash slot, pipelined so that each node costs
// one round trip, each node under its own circuit breaker), the others
// from one call of the batch loader (see [WithBatchLoader]) under their
// fill locks, written back in one pipeline per node. With
// [WithStaleIfError], a value past its logical expiry is reloaded as
// [Cache.Get] reloads it (with the LoadFunc) and served stale only when
// that fails, another process is reloading it or the soft timeout passes.
// A missing key shares the flight of a concurrent Get of the same key, so it
// is loaded once. Keys that do not exist are absent from the map. The error
// joins the errors of the keys that failed; the map still holds every key
// that did not. Like Get, GetMany returns ctx.Err() as soon as ctx is done
// and never returns a Redis fault.
func (c *Cache[K, V]) GetMany(ctx context.Context, keys []K) (map[K]V, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !c.tracker.add() {
		return nil, ErrClosed
	}
	defer c.tracker.done()
	out := make(map[K]V, len(keys))
	var errs []error
	seen := make(map[K]struct{}, len(keys))
	uniq := keys[:0:0]
	for _, k := range keys {
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			uniq = append(uniq, k)
		}
	}
	add := func(k K, r result[V]) {
		switch {
		case r.err == nil:
			out[k] = r.val
		case !errors.Is(r.err, ErrNotFound):
			errs = append(errs, fmt.Errorf("key %v: %w", k, r.err))
		}
	}
	if c.l1 != nil && c.cfg.localFirst {
		rest := uniq[:0:0]
		for _, k := range uniq {
			if r, ok := c.l1.get(protocol.ValueKey(c.cfg.prefix, c.encode(k)), true); ok {
				c.stats.localHits.Add(1)
				add(k, r)
				continue
			}
			rest = append(rest, k)
		}
		uniq = rest
	}
	if len(uniq) == 0 {
		return out, errors.Join(errs...)
	}

	vkeys := make([]string, len(uniq))
	for i, k := range uniq {
		vkeys[i] = protocol.ValueKey(c.cfg.prefix, c.encode(k))
	}
	var (
		todo  []pendingKey[K, V] // not answered yet, flights joined or started
		owned []pendingKey[K, V] // flights this call leads
	)
	epoch := c.localEpoch()
	// On a Cluster the MGETs run per node, each under that node's breaker
	// and budget: a dead node fails only its keys (failed[i]).
	raws, failed, rerr := c.mget(ctx, vkeys)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if rerr != nil {
		c.redisError(rerr)
	}
	for i, k := range uniq {
		r, h, kind := c.classify(raws[i], failed[i])
		var stale *result[V]
		switch kind {
		case readHit:
			if c.l1 != nil {
				c.l1.refresh(vkeys[i], r, h.Expiry, epoch)
			}
			c.maybeRefresh(k, vkeys[i], h.Expiry, h.LoadTime)
			c.stats.hits.Add(1)
			add(k, r)
			continue
		case readStale:
			stale = &r // revived in the key's flight, as Get does
		case readFault:
			if c.l1 != nil {
				if r, ok := c.l1.get(vkeys[i], false); ok {
					c.stats.localHits.Add(1)
					add(k, r)
					continue
				}
			}
		}
		fl, leader := c.flights.Join(ctx, vkeys[i])
		p := pendingKey[K, V]{key: k, vkey: vkeys[i], fl: fl, unreadable: kind == readUnreadable, redisDown: kind == readFault, stale: stale}
		todo = append(todo, p)
		if leader {
			owned = append(owned, p)
		}
	}
	if len(owned) > 0 {
		c.startBatch(ctx, owned, epoch)
	}
	for _, p := range todo {
		v, err := c.await(ctx, p.fl)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		add(p.key, result[V]{val: v, err: err})
	}
	return out, errors.Join(errs...)
}

// waitersOf returns the waiters of the flights of items idx that have any.
func waitersOf[K comparable, V any](items []pendingKey[K, V], idx ...int) []*flight.Waiters {
	var ws []*flight.Waiters
	for _, i := range idx {
		if fl := items[i].fl; fl != nil {
			ws = append(ws, fl.Waiters())
		}
	}
	return ws
}

// pendingKey is one key of a GetMany that missed or found a stale value,
// with its flight.
type pendingKey[K comparable, V any] struct {
	key        K
	vkey       string
	fl         *flight.Call[result[V]]
	unreadable bool
	redisDown  bool       // its MGET failed: load it without a lock, do not write
	stale      *result[V] // the value past its logical expiry that the MGET found: revive it
}

// startBatch resolves the flights a GetMany leads on a goroutine owned by
// the Cache, detached from the caller's cancellation, and finishes each.
func (c *Cache[K, V]) startBatch(caller context.Context, items []pendingKey[K, V], epoch uint64) {
	for _, p := range items {
		c.flights.Hold(p.fl)
	}
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		results := make([]result[V], len(items))
		finished := false
		defer func() {
			if p := recover(); p != nil && !finished {
				for i := range results {
					results[i] = result[V]{err: &PanicError{Value: p, Stack: stack()}}
				}
			}
			for i, p := range items {
				c.flights.Finish(p.vkey, p.fl, results[i])
			}
		}()
		c.resolveBatch(detach(caller, c.life), items, results, epoch)
		finished = true
	}()
}

// resolveBatch fills results for items: lock what it can, load the locked
// keys and those Redis could not be asked about in one batch, fill the
// locked ones in one pipeline per node, and hand the rest (keys locked by
// others, conflicts) to the single-key path. Stale values are revived on
// the single-key path meanwhile, as Get revives them: under the lock,
// served stale only when the reload fails, another process reloads them
// or the soft timeout passes.
func (c *Cache[K, V]) resolveBatch(ctx context.Context, items []pendingKey[K, V], results []result[V], epoch uint64) {
	single := func(idx []int) {
		var g errgroup.Group
		g.SetLimit(getManyConcurrency)
		for _, i := range idx {
			g.Go(func() error {
				ctx := flight.WithWaiters(ctx, waitersOf(items, i)...)
				p := items[i]
				switch {
				case p.stale != nil:
					results[i] = c.revive(ctx, p.key, p.vkey, *p.stale, epoch)
				case p.redisDown:
					results[i] = c.loadAndFill(ctx, p.key, protocol.KeysFor(p.vkey), protocol.Lease{}, epoch)
				default:
					results[i] = c.miss(ctx, p.key, protocol.KeysFor(p.vkey), p.unreadable, epoch)
				}
				return nil
			})
		}
		_ = g.Wait()
	}
	batch, _ := c.cfg.batchLoad.(BatchLoadFunc[K, V])
	if batch == nil {
		single(indexes(len(items)))
		return
	}
	var up, toLoad, stale []int
	for i := range items {
		switch {
		case items[i].stale != nil:
			stale = append(stale, i)
		case items[i].redisDown:
			toLoad = append(toLoad, i) // without a lock, not written
		default:
			up = append(up, i)
		}
	}
	var revived sync.WaitGroup
	if len(stale) > 0 {
		revived.Go(func() { single(stale) })
	}
	defer revived.Wait()
	leases := make([]protocol.Lease, len(items))
	locked, rest, down := c.acquireBatch(ctx, items, up, results, leases)
	toLoad = append(append(toLoad, locked...), down...)
	if len(toLoad) > 0 {
		bctx := flight.WithWaiters(ctx, waitersOf(items, toLoad...)...)
		conflicts := c.loadBatch(bctx, batch, items, toLoad, results, leases, epoch, nil)
		rest = append(rest, conflicts...)
	}
	single(rest)
}

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
	errOf, err := c.perNode(ctx, vkeys, idx, func(ctx context.Context, sub []int) error {
		return c.pipelineScript(ctx, protocol.Acquire, sub, func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
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
		if errors.Is(errOf[i], errIncomplete) {
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
			if cmds[i] == nil || isOutage(cmds[i].Err()) {
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
	errOf, _ := c.perNode(ctx, vkeys, nil, func(ctx context.Context, sub []int) error {
		return c.pipelineScript(ctx, protocol.Fill, sub, func(p redis.Pipeliner, j int, eval bool) *redis.Cmd {
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
		if !errors.Is(cerr, errIncomplete) && cmds[j] != nil {
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
