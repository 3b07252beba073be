package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/flight"
	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/restart"
	"golang.org/x/sync/errgroup"
)

// warmup holds the keys a warm-up loads, the Cache's check on the
// client's restart watcher (internal/restart) and the state of the
// warm-ups that check starts.
type warmup[K comparable] struct {
	keys  []K
	list  func(context.Context) ([]K, error)
	check restart.Check
	leave func() // leaves the restart watcher; nil when not watching

	mu             sync.Mutex
	running, again bool // a restart warm-up runs; another restart came meanwhile
}

// newWarmup checks the types of WithWarmupKeys and WithWarmup against K.
func newWarmup[K comparable](cfg *config) (*warmup[K], error) {
	w := &warmup[K]{}
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

// markerKey is the key whose absence tells that Redis lost its data. It
// has no braces, so it can never be the key of a cached value.
func (c *Cache[K, V]) markerKey() string { return c.cfg.prefix + "warm-marker" }

// startWatcher joins the restart watcher that every Cache on the same
// client shares (internal/restart), when warm-up keys are configured: it
// checks the marker key at once and every WithRestartCheck, and the one
// process of a fleet that finds Redis empty warms it.
func (c *Cache[K, V]) startWatcher() {
	if !c.warm.configured() || c.cfg.restartCheck == 0 {
		return
	}
	c.warm.check.Guard = c.guard
	c.warm.check.Marker = c.markerKey()
	c.warm.check.Every = c.cfg.restartCheck
	c.warm.check.Empty = c.restarted
	_, c.warm.leave = restart.Join(c.sub, &c.warm.check)
}

// stopWatcher leaves the restart watcher; Close calls it before waiting
// for the Cache's goroutines.
func (c *Cache[K, V]) stopWatcher() {
	if c.warm.leave != nil {
		c.warm.leave()
	}
}

// restarted runs on the watcher's goroutine when this process found Redis
// empty. It warms Redis on a goroutine of the Cache, one warm-up at a
// time: a restart found during a warm-up starts another after it.
func (c *Cache[K, V]) restarted() {
	c.stats.restarts.Add(1)
	c.log(c.life, slog.LevelWarn, "cacheaside: redis has no warm-up marker (new, flushed or restarted empty); warming")
	w := c.warm
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		w.again = true
		return
	}
	if !c.tracker.add() {
		return // closing
	}
	w.running = true
	go func() {
		defer c.tracker.done()
		for {
			_ = c.Warm(c.life) // Warm logs its outcome
			w.mu.Lock()
			again := w.again && c.life.Err() == nil
			w.again, w.running = false, again
			w.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// Warm loads the warm-up keys (WithWarmupKeys and WithWarmup) and writes
// them to Redis, at most 8 at a time. A key that is
// already in Redis, or whose fill lock another process holds, is skipped,
// so a fleet that warms at once loads each key about once. Warm returns
// when every key is done or ctx is cancelled; its error joins the errors
// of the keys that failed (a key the loader does not find is not an
// error); a key that failed because Redis was unavailable matches
// [ErrRedisUnavailable]. Progress is counted in [Stats].Warmed and logged.
//
// Each key's load is the key's flight in this process, as a Get's is: a
// Get of the key meanwhile waits for it instead of loading the key again.
// A load under way when ctx is cancelled goes on, for those Gets, until it
// ends or [Cache.Close].
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
	// The loads begin under the clock as of now (after an empty restart,
	// a recreated one), or their fills would be refused (clockloss.go).
	c.syncClock(ctx)
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

// warmKey loads and writes one key under its fill lock. did is false when
// the key was already there or another process, or a Get of this one, was
// filling it.
//
// The load runs as the key's flight in this process, as a Get's does, so
// that a Get of the key meanwhile waits for it rather than loading the key
// a second time: when Redis fails during the load, its result reaches L1
// only after the fill and the lock's release have failed, each after up
// to the Redis timeout (longer on a starved process), and a Get that came
// in between loaded the key again ("queried one key 5 times during the
// outage" in examples/outage, against L1.OutageOnly's one load per key
// per process).
func (c *Cache[K, V]) warmKey(ctx context.Context, key K) (did bool, err error) {
	vkey := protocol.ValueKey(c.cfg.prefix, c.encode(key))
	ks := protocol.KeysFor(vkey)
	mark := c.localStamp(vkey) // before the acquire: see loadedMeanwhile
	st, _, l, err := c.acquire(ctx, ks, false)
	if err != nil {
		c.redisError(err)
		return false, redisUnavailable(ctx, err)
	}
	if st != protocol.StateAcquired {
		return false, nil
	}
	c.stats.lockAcquired.Add(1)
	fl, leader := c.flights.Join(ctx, vkey)
	if !leader {
		// A Get of this process reads the key or waits for this lock:
		// it loads the key once the lock is given back.
		c.giveBack(ctx, ks, l, nil)
		return false, nil
	}
	if c.loadedMeanwhile(ctx, fl, key, vkey, l, mark) {
		select { // Warm returns once its keys are written, as below
		case <-fl.Done():
		case <-ctx.Done():
			return false, ctx.Err()
		}
		return false, nil
	}
	epoch := c.localEpoch()
	// As a Get's flight, the load runs on a goroutine of the Cache's,
	// detached from ctx, with the Gets that join it as its waiters: one
	// that joined gets its value when Warm is cancelled, and Warm returns
	// at once.
	var stored atomic.Bool
	c.startFlight(ctx, fl, vkey, func(ctx context.Context) result[V] {
		r, conflict, ok := c.loadAndFillOnce(ctx, key, ks, l, epoch)
		if conflict {
			// Invalidated during the load: the result goes to no one,
			// and the Gets that joined get what a Get's flight gives
			// them.
			r = c.miss(ctx, key, ks, false, epoch)
		}
		stored.Store(ok)
		return r
	})
	select {
	case <-fl.Done():
	case <-ctx.Done():
		return false, ctx.Err()
	}
	r := fl.Result()
	if r.err != nil && !errors.Is(r.err, ErrNotFound) {
		return false, r.err
	}
	return stored.Load(), nil
}

// loadedMeanwhile is what a warm-up does once it leads fl, the flight of
// key (vkey), under the fill lock l it took: when a flight of this process
// wrote vkey to L1 since mark was taken, before the acquire, it gives the
// lock back, runs fl as a Get's flight would (resolve: the Redis read,
// and on a failed read the L1 copy, else the lock and the load) and
// reports true, and the warm-up does not load the key itself.
//
// That flight ended between the acquire and the warm-up's Join, and in an
// outage it loaded the key: Redis died once the lock was taken, a Get
// read it, failed, and loaded the key without the lock, and L1 kept the
// result. Loading it again broke L1's one load per key per process in an
// outage ("instance 1, key 5: 2 loads" in examples/outage, the second in
// warmKey); resolve's failed read answers with that L1 copy instead.
//
// Finishing fl with the L1 entry itself is wrong twice over. Redis may be
// healthy (one read failed, TestWarmUpAfterOneFailedReadWritesRedis): the
// key must then be written, and resolve loads it under the lock. And the
// entry may predate an Invalidate of this process that is between its
// Forget and its second L1 drop: a Get that starts once Invalidate has
// returned would join fl and get the older value; resolve reads Redis,
// which the Invalidate has already written.
func (c *Cache[K, V]) loadedMeanwhile(ctx context.Context, fl *flight.Call[result[V]], key K, vkey string, l protocol.Lease, mark l1.Stamp[V]) bool {
	if _, ok := c.localSince(vkey, mark); !ok {
		return false
	}
	c.giveBack(ctx, protocol.KeysFor(vkey), l, nil)
	c.startFlight(ctx, fl, vkey, func(ctx context.Context) result[V] { return c.resolve(ctx, key, vkey) })
	return true
}

// log writes to the configured logger, if any.
func (c *Cache[K, V]) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if c.logger != nil {
		c.logger.Log(ctx, level, msg, args...)
	}
}
