package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cacheaside/cacheaside/internal/flight"
	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"golang.org/x/sync/errgroup"
)

// getManyConcurrency bounds the single-key loads of a GetMany without a
// batch loader.
const getManyConcurrency = 16

// GetMany returns the values of keys: the ones in Redis with one MGET (on a
// Redis Cluster, one MGET per hash slot, pipelined so that each node costs
// one round trip, each node under its own circuit breaker), the others
// from one call of the batch loader (see [WithBatchLoader]) under their
// fill locks, written back in one pipeline per node. With
// [WithServeStale], a value past its logical expiry is reloaded as
// [Cache.Get] reloads it (with the LoadFunc) and served stale only when
// that fails, another process is reloading it or the soft timeout passes.
// A missing key shares the flight of a concurrent Get of the same key, so it
// is loaded once. Keys that do not exist are absent from the map. The error
// joins the errors of the keys that failed; the map still holds every key
// that did not. Like Get, GetMany returns ctx.Err() as soon as ctx is done
// and never returns a Redis fault.
//
// With [WithGetHook], GetMany calls the hook once per distinct key, with
// that key's result, as a Get of the key would.
func (c *Cache[K, V]) GetMany(ctx context.Context, keys []K) (out map[K]V, err error) {
	start := c.hookStart()
	seen := make(map[K]bool, len(keys)) // distinct keys: whether the hook saw them
	uniq := keys[:0:0]
	for _, k := range keys {
		if _, dup := seen[k]; !dup {
			seen[k] = false
			uniq = append(uniq, k)
		}
	}
	if c.cfg.getHook != nil {
		defer func() { c.observeRest(ctx, start, seen, err) }()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !c.tracker.add() {
		return nil, ErrClosed
	}
	defer c.tracker.done()
	out = make(map[K]V, len(keys))
	var errs []error
	add := func(k K, r result[V]) {
		if c.cfg.getHook != nil {
			seen[k] = true
			c.observe(ctx, start, r)
		}
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
	epoch, m := c.localEpoch(), c.replay.Mark()
	// On a Cluster the MGETs run per node, each under that node's breaker
	// and budget: a dead node fails only its keys (failed[i]).
	raws, failed, rerr := c.mget(ctx, vkeys)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if rerr != nil {
		c.redisError(rerr)
	}
	// A codec or hook that ends this goroutine (runtime.Goexit) while the
	// replies are decoded must not leave the flights this call already
	// leads in the air: every later Get of their keys would wait for ever.
	handed := false
	defer func() {
		if !handed {
			for _, p := range owned {
				c.flights.Finish(p.vkey, p.fl, result[V]{err: errExited})
			}
		}
	}()
	for i, k := range uniq {
		raw, err := redisguard.Reply(raws, failed, i)
		r, h, kind := c.classify(vkeys[i], m, raw, err)
		var stale *result[V]
		switch kind {
		case readHit:
			if c.l1 != nil {
				c.l1.refresh(vkeys[i], r, h.Expiry, epoch)
			}
			c.maybeRefresh(k, vkeys[i], h.Expiry, h.LoadTime)
			if c.audit != nil {
				c.auditHit(k, vkeys[i], r, h)
			}
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
	handed = true
	if len(owned) > 0 {
		c.startBatch(ctx, owned, epoch)
	}
	for _, p := range todo {
		r := c.wait(ctx, p.fl)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		add(p.key, r)
	}
	return out, errors.Join(errs...)
}

// observeRest runs the Get hook for the keys of a GetMany that returned
// before it answered them (ctx done, Cache closed), with err, the error
// GetMany returned.
func (c *Cache[K, V]) observeRest(ctx context.Context, start time.Time, seen map[K]bool, err error) {
	if err == nil {
		return
	}
	for _, done := range seen {
		if !done {
			c.observe(ctx, start, result[V]{err: err})
		}
	}
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
		returned := false
		defer c.finishFlights(items, results, &returned)
		c.resolveBatch(detach(caller, c.life), items, results, epoch)
		returned = true
	}()
}

// finishFlights finishes the flights of items that have one (fl set)
// with their results. Defer it directly in the code that leads them,
// which sets *returned when it returns: a panic there (a codec, a hook)
// is recovered and becomes each of those items' result, a PanicError,
// and a runtime.Goexit becomes errExited, so that no flight is left
// unfinished or answered with a zero value.
func (c *Cache[K, V]) finishFlights(items []pendingKey[K, V], results []result[V], returned *bool) {
	p := recover()
	for i, it := range items {
		if it.fl == nil {
			continue
		}
		switch {
		case p != nil:
			results[i] = result[V]{err: &PanicError{Value: p, Stack: stack()}}
		case !*returned:
			results[i] = result[V]{err: errExited}
		}
		c.flights.Finish(it.vkey, it.fl, results[i])
	}
}

// resolveBatch fills results for items: lock what it can, load the locked
// keys and those Redis could not be asked about in one batch, fill the
// locked ones in one pipeline per node, and hand the rest (keys locked by
// others, conflicts) to the single-key path. Stale values are revived on
// the single-key path meanwhile, as Get revives them: under the lock,
// served stale only when the reload fails, another process reloads them
// or the soft timeout passes.
func (c *Cache[K, V]) resolveBatch(ctx context.Context, items []pendingKey[K, V], results []result[V], epoch uint64) {
	single := func(idx []int) { c.resolveSingly(ctx, items, idx, results, epoch) }
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

// resolveSingly fills results for the items idx on the single-key path,
// up to getManyConcurrency at a time, as a Get's flight of each would:
// reviving a stale value, loading without the lock when Redis could not
// be asked, or the miss path (the lock or the wait for its holder, the
// load and the fill, redone after a conflict).
func (c *Cache[K, V]) resolveSingly(ctx context.Context, items []pendingKey[K, V], idx []int, results []result[V], epoch uint64) {
	var g errgroup.Group
	g.SetLimit(getManyConcurrency)
	for _, i := range idx {
		g.Go(func() error {
			returned := false
			defer func() {
				if !returned { // a codec or hook ended this goroutine (Goexit)
					results[i] = result[V]{err: errExited}
				}
			}()
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
			returned = true
			return nil
		})
	}
	_ = g.Wait()
}

// indexes returns 0, 1, …, n-1.
func indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
