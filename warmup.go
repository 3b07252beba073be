package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"golang.org/x/sync/errgroup"
)

// warmup holds the keys a warm-up loads and the signal that asks the
// restart watcher to check at once.
type warmup[K comparable] struct {
	keys []K
	list func(context.Context) ([]K, error)
	kick chan struct{}
}

// newWarmup checks the types of WithWarmupKeys and WithWarmup against K.
func newWarmup[K comparable](cfg *config) (warmup[K], error) {
	w := warmup[K]{kick: make(chan struct{}, 1)}
	var errs []error
	if cfg.warmKeys != nil {
		keys, ok := cfg.warmKeys.([]K)
		if !ok {
			var k K
			errs = append(errs, fmt.Errorf("WithWarmupKeys: got keys of type %T, want []%T", cfg.warmKeys, k))
		}
		w.keys = keys
	}
	if cfg.warmFunc != nil {
		list, ok := cfg.warmFunc.(func(context.Context) ([]K, error))
		if !ok {
			var k K
			errs = append(errs, fmt.Errorf("WithWarmup: got %T, want func(context.Context) ([]%T, error)", cfg.warmFunc, k))
		} else if list == nil {
			errs = append(errs, errors.New("WithWarmup: nil function"))
		}
		w.list = list
	}
	return w, errors.Join(errs...)
}

func (w *warmup[K]) configured() bool { return len(w.keys) > 0 || w.list != nil }

// nudge asks the watcher to check for an empty restart now. It never blocks.
func (w *warmup[K]) nudge() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// markerKey is the key whose absence tells that Redis lost its data. It
// has no braces, so it can never be the key of a cached value.
func (c *Cache[K, V]) markerKey() string { return c.cfg.prefix + "warm-marker" }

// startWatcher starts the goroutine that detects an empty Redis and warms
// it, when warm-up keys are configured.
func (c *Cache[K, V]) startWatcher() {
	if !c.warm.configured() || c.cfg.restartCheck == 0 {
		return
	}
	c.tracker.spawn() // New has not returned: nothing can be waiting yet
	go func() {
		defer c.tracker.done()
		t := time.NewTicker(c.cfg.restartCheck)
		defer t.Stop()
		for {
			c.checkRestart(c.life)
			select {
			case <-c.life.Done():
				return
			case <-t.C:
			case <-c.warm.kick:
			}
		}
	}()
}

// checkRestart writes the marker key if it is missing. The one process of
// the fleet whose SET NX succeeds found Redis empty — restarted without
// persistence, flushed, or new — and warms it; the others see the marker
// and do nothing. A new run_id alone would not do: it also changes on a
// Sentinel failover that kept the data.
func (c *Cache[K, V]) checkRestart(ctx context.Context) {
	// Each write carries its own number, so that a write whose outcome was
	// lost (an error, or a call abandoned at the budget that may still
	// run) can be recognised later: the marker written at start-up by this
	// same process must not pass for it.
	c.markerSeq++
	prefix := c.tokenPrefix + "/"
	value := prefix + strconv.FormatUint(c.markerSeq, 10)
	// The call may outlive the guard's wait (an abandoned call on a client
	// that ignores deadlines): it reads only local copies.
	unsureFrom := c.unsureFrom
	var created bool
	err := c.guard.Do(ctx, c.markerKey(), func(ctx context.Context) error {
		var err error
		created, err = c.rdb.SetNX(ctx, c.markerKey(), value, 0).Result()
		if err == nil && !created && unsureFrom != 0 {
			// An earlier write failed on our side but may have run on the
			// server: if the marker is one of those, that restart is ours
			// to warm.
			owner, gerr := c.rdb.Get(ctx, c.markerKey()).Result()
			if n, ok := strings.CutPrefix(owner, prefix); gerr == nil && ok {
				seq, perr := strconv.ParseUint(n, 10, 64)
				created = perr == nil && seq >= unsureFrom
			}
		}
		return err
	})
	switch {
	case errors.Is(err, redisguard.ErrSkipped): // not sent
		return
	case err != nil:
		if c.unsureFrom == 0 {
			c.unsureFrom = c.markerSeq
		}
		return
	}
	c.unsureFrom = 0
	if !created {
		return
	}
	c.stats.restarts.Add(1)
	c.log(ctx, slog.LevelWarn, "cacheaside: redis has no warm-up marker (new, flushed or restarted empty); warming")
	_ = c.Warm(ctx) // Warm logs its outcome
}

// Warm loads the warm-up keys (WithWarmupKeys and WithWarmup) and writes
// them to Redis, at most 8 at a time. A key that is
// already in Redis, or whose fill lock another process holds, is skipped,
// so a fleet that warms at once loads each key about once. Warm returns
// when every key is done or ctx is cancelled; its error joins the errors
// of the keys that failed (a key the loader does not find is not an
// error); a key that failed because Redis was unavailable matches
// [ErrRedisUnavailable]. Progress is counted in [Stats].Warmed and logged.
func (c *Cache[K, V]) Warm(ctx context.Context) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	keys := c.warm.keys
	if c.warm.list != nil {
		more, err := c.warm.list(ctx)
		if err != nil {
			return fmt.Errorf("cacheaside: warm: listing keys: %w", err)
		}
		keys = append(keys[:len(keys):len(keys)], more...)
	}
	c.stats.warmUps.Add(1)
	start := time.Now()
	var (
		g               errgroup.Group
		warmed, skipped atomic.Int64
		mu              sync.Mutex
		errs            []error
	)
	g.SetLimit(c.cfg.warmConcurrency)
	c.log(ctx, slog.LevelInfo, "cacheaside: warm-up started", "keys", len(keys))
	// Progress: a log line each tenth of the keys (at least 100 keys).
	var done atomic.Int64
	step := int64(max(100, len(keys)/10))
	record := func(k K, did bool, err error) {
		switch {
		case err != nil:
			mu.Lock()
			errs = append(errs, fmt.Errorf("key %v: %w", k, err))
			mu.Unlock()
		case did:
			warmed.Add(1)
			c.stats.warmed.Add(1)
		default:
			skipped.Add(1)
		}
		if n := done.Add(1); n%step == 0 && n < int64(len(keys)) {
			c.log(ctx, slog.LevelInfo, "cacheaside: warm-up progress",
				"done", n, "keys", len(keys), "warmed", warmed.Load(), "took", time.Since(start).Round(time.Millisecond).String())
		}
	}
	if batch, _ := c.cfg.batchLoad.(BatchLoadFunc[K, V]); batch != nil {
		// With a batch loader, warm in chunks: one pipeline of lock
		// attempts, one batch load and one pipeline of fills per chunk.
		for chunk := range slices.Chunk(keys, warmChunk) {
			if ctx.Err() != nil {
				break
			}
			g.Go(func() error {
				c.warmBatch(ctx, batch, chunk, record)
				return nil
			})
		}
	} else {
		for _, k := range keys {
			if ctx.Err() != nil {
				break
			}
			g.Go(func() error {
				did, err := c.warmKey(ctx, k)
				record(k, did, err)
				return nil
			})
		}
	}
	_ = g.Wait()
	c.kickPrefill() // the warmed keys are in Redis: into L1 with them
	err := errors.Join(append([]error{ctx.Err()}, errs...)...)
	c.log(ctx, slog.LevelInfo, "cacheaside: warm-up finished",
		"keys", len(keys), "warmed", warmed.Load(), "skipped", skipped.Load(),
		"failed", len(errs), "took", time.Since(start).Round(time.Millisecond).String(), "err", err)
	if err != nil {
		return fmt.Errorf("cacheaside: warm: %w", err)
	}
	return nil
}

// warmChunk is how many keys one batch load of a warm-up covers.
const warmChunk = 100

// errWarmRedis is the error of a warm-up key whose Redis node could not be
// reached to take its fill lock.
var errWarmRedis = fmt.Errorf("%w for this key", ErrRedisUnavailable)

// warmBatch warms keys with one batch load.
func (c *Cache[K, V]) warmBatch(ctx context.Context, batch BatchLoadFunc[K, V], keys []K, record func(K, bool, error)) {
	items := make([]pendingKey[K, V], len(keys))
	for i, k := range keys {
		items[i] = pendingKey[K, V]{key: k, vkey: protocol.ValueKey(c.cfg.prefix, c.encode(k))}
	}
	results := make([]result[V], len(items))
	leases := make([]protocol.Lease, len(items))
	locked, _, down := c.acquireBatch(ctx, items, indexes(len(items)), results, leases)
	stored := make([]bool, len(items))
	c.loadBatch(ctx, batch, items, locked, results, leases, c.localEpoch(), stored)
	isLocked := make(map[int]bool, len(locked))
	for _, i := range locked {
		isLocked[i] = true
	}
	isDown := make(map[int]bool, len(down))
	for _, i := range down {
		isDown[i] = true
	}
	for i := range keys {
		err := results[i].err
		switch {
		case isDown[i]:
			err = errWarmRedis // its node could not be reached: not warmed
		case !isLocked[i] || errors.Is(err, ErrNotFound):
			err = nil // present, filled by another process, or not found
		}
		record(keys[i], stored[i], err)
	}
}

// warmKey loads and writes one key under its fill lock. did is false when
// the key was already there or another process was filling it.
func (c *Cache[K, V]) warmKey(ctx context.Context, key K) (did bool, err error) {
	ks := protocol.KeysFor(protocol.ValueKey(c.cfg.prefix, c.encode(key)))
	st, _, l, err := c.acquire(ctx, ks, false)
	if err != nil {
		c.redisError(err)
		return false, redisUnavailable(ctx, err)
	}
	if st != protocol.StateAcquired {
		return false, nil
	}
	c.stats.lockAcquired.Add(1)
	r, _, stored := c.loadAndFillOnce(ctx, key, ks, l, c.localEpoch())
	if r.err != nil && !errors.Is(r.err, ErrNotFound) {
		return false, r.err
	}
	return stored, nil
}

// log writes to the configured logger, if any.
func (c *Cache[K, V]) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if c.logger != nil {
		c.logger.Log(ctx, level, msg, args...)
	}
}
