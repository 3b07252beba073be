// Package cacheaside implements a read-through cache over Redis for values
// whose source of truth is a database, built to stay correct and fast when
// keys are hot, loads are slow and Redis misbehaves.
//
// # How a Get works
//
// [Cache.Get] encodes the key, then joins the flight of that key in this
// process or starts one: concurrent Gets of one key share one Redis read and
// at most one load. The flight runs on a goroutine owned by the Cache,
// detached from the cancellation of any one caller, and each caller waits on
// its own context.
//
//  1. GET the value key. A value (or a cached "not found") is a hit: decode,
//     hand to every caller of the flight, done.
//  2. On a miss, one script re-reads the value and, if it is still missing,
//     takes the fill lock with SET NX PX and reads the key's generation.
//  3. The lock holder calls the loader under the load timeout and stores the
//     result with a conditional fill: one script that writes the value with
//     a jittered TTL and deletes the lock only if the lock still holds the
//     holder's token. [Cache.Invalidate] and [Cache.Set] delete the lock and
//     change the generation, so a fill that started before them writes
//     nothing and the load is redone.
//  4. A process that finds the lock taken polls with a short jittered backoff
//     until the holder's value lands, taking the lock over if the holder died
//     and the lock expired. When the lock wait runs out it loads by itself;
//     that value is written only if the generation did not change meanwhile.
//
// Across a fleet this gives at most one load per key per lock TTL while Redis
// is healthy. When Redis fails, Get still returns the loader's value with a
// nil error: a Redis fault is counted in [Stats], never returned.
//
// # Keys in Redis
//
// For a key that encodes to s (see [WithKeyFunc]) the cache uses
// <prefix>{s} for the value, <prefix>{s}:lock for the fill lock and
// <prefix>{s}:gen for the generation. The braces are a Redis Cluster hash
// tag: all three keys live in one slot. When s is empty or contains '}', the
// tag is "#" and the hex SHA-256 of s. Values are stored in a small
// versioned envelope around the codec's bytes; entries the cache cannot read
// (corrupt, foreign, or from an incompatible future version) are misses.
//
// # Shared values
//
// Callers that share a flight receive the same V. When V holds references
// (pointers, slices, maps), callers must treat the value as read-only.
package cacheaside

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrClosed is returned by calls on a Cache after [Cache.Close].
var ErrClosed = errors.New("cacheaside: cache closed")

// Cache is a read-through cache of values of type V under keys of type K,
// stored in Redis and loaded on a miss by a [LoadFunc]. A Cache is safe for
// concurrent use by multiple goroutines. Close it when done; it does not
// close the Redis client.
type Cache[K comparable, V any] struct {
	rdb    redis.UniversalClient
	load   LoadFunc[K, V]
	encode keyEncoder[K]
	cfg    config
	genTTL time.Duration

	flights group[V]
	stats   counters

	tokenPrefix string
	tokenSeq    atomic.Uint64

	// mu guards closed against the start of new flights, so that Close's
	// Wait never races with wg.Add.
	mu       sync.RWMutex
	closed   bool
	wg       sync.WaitGroup
	life     context.Context // cancelled by Close; parent of every flight
	stopLife context.CancelFunc
}

// New returns a Cache that stores values in rdb and loads missing ones with
// load. rdb may be a *redis.Client, a *redis.ClusterClient, a Sentinel
// failover client or any other redis.UniversalClient; the Cache does not
// take ownership of it. New validates every option and returns one error
// that names each invalid one.
func New[K comparable, V any](rdb redis.UniversalClient, load LoadFunc[K, V], opts ...Option) (*Cache[K, V], error) {
	cfg := defaultConfig()
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	var errs []error
	if rdb == nil {
		errs = append(errs, errors.New("nil Redis client"))
	}
	if load == nil {
		errs = append(errs, errors.New("nil LoadFunc"))
	}
	enc, err := newKeyEncoder[K](cfg.keyFunc)
	if err != nil {
		errs = append(errs, err)
	}
	if err := cfg.resolve(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cacheaside: invalid configuration:\n%w", err)
	}

	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	c := &Cache[K, V]{
		rdb:         rdb,
		load:        load,
		encode:      enc,
		cfg:         cfg,
		genTTL:      generationTTL(cfg),
		tokenPrefix: hex.EncodeToString(id[:]) + ".",
	}
	c.life, c.stopLife = context.WithCancel(context.Background())
	return c, nil
}

// generationTTL is how long a generation written by Invalidate or Set
// lives. A load without the lock started at most this long ago can still see
// the generation it must compare against; older loads are not written.
func generationTTL(cfg config) time.Duration {
	return max(time.Minute, 4*(cfg.lockWait+cfg.lockTTL))
}

// Get returns the value of key: from Redis when it is there, else from the
// loader, once per key across the fleet while Redis is healthy. It returns
// an error matching [ErrNotFound] when the loader said the key does not
// exist (now or within the negative TTL), the loader's error when it failed,
// ctx.Err() as soon as ctx is done (the shared load goes on for the other
// callers), and [ErrClosed] after Close. Redis faults are never returned:
// Get falls back to the loader.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	var zero V
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	vkey := valueKey(c.cfg.prefix, c.encode(key))
	fl, leader := c.flights.join(vkey)
	if leader {
		if !c.startFlight() {
			c.flights.finish(vkey, fl, result[V]{err: ErrClosed})
			return zero, ErrClosed
		}
		go c.runFlight(ctx, key, vkey, fl)
	}
	select {
	case <-fl.done:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	if fl.res.hit {
		c.stats.hits.Add(1)
	} else {
		c.stats.misses.Add(1)
	}
	return fl.res.val, fl.res.err
}

// startFlight registers a flight goroutine with Close, or reports that the
// Cache is closed.
func (c *Cache[K, V]) startFlight() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

// runFlight resolves one flight and publishes its result. A panic anywhere
// in it (a codec, a hook) becomes the flight's error.
func (c *Cache[K, V]) runFlight(caller context.Context, key K, vkey string, fl *call[V]) {
	defer c.wg.Done()
	var r result[V]
	defer func() {
		if p := recover(); p != nil {
			r = result[V]{err: &PanicError{Value: p, Stack: stack()}}
		}
		c.flights.finish(vkey, fl, r)
	}()
	r = c.resolve(detach(caller, c.life), key, vkey)
}

// Set stores value under key now, replacing what Redis holds, and makes any
// load of key in flight anywhere in the fleet discard its result instead of
// writing it. It returns an error when Redis could not be written.
func (c *Cache[K, V]) Set(ctx context.Context, key K, value V) error {
	if c.isClosed() {
		return ErrClosed
	}
	env, err := c.encodeValue(value, 0)
	if err != nil {
		return fmt.Errorf("cacheaside: set: %w", err)
	}
	vkey := valueKey(c.cfg.prefix, c.encode(key))
	rctx, cancel := context.WithTimeout(ctx, c.cfg.redisTTL)
	defer cancel()
	err = overwriteScript.Run(rctx, c.rdb, keysFor(vkey), c.overwriteArgs(env, jittered(c.cfg.ttl, c.cfg.jitter))...).Err()
	c.flights.forget(vkey)
	if err != nil {
		c.redisError(err)
		return fmt.Errorf("cacheaside: set: %w", err)
	}
	return nil
}

// Invalidate removes keys from Redis and makes any load of them in flight
// anywhere in the fleet discard its result instead of writing it. Once
// Invalidate has returned nil, no Get started afterwards returns a value
// loaded before it (see the README for the limits across a failover). It
// returns an error when Redis could not be written; the shared copies of
// the keys may then still be stale.
func (c *Cache[K, V]) Invalidate(ctx context.Context, keys ...K) error {
	if c.isClosed() {
		return ErrClosed
	}
	if len(keys) == 0 {
		return nil
	}
	vkeys := make([]string, len(keys))
	for i, k := range keys {
		vkeys[i] = valueKey(c.cfg.prefix, c.encode(k))
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.redisTTL)
	defer cancel()
	var err error
	if len(vkeys) == 1 {
		err = overwriteScript.Run(rctx, c.rdb, keysFor(vkeys[0]), c.overwriteArgs(nil, 0)...).Err()
	} else {
		// EVAL, not EVALSHA: a pipeline learns of NOSCRIPT only after Exec.
		_, err = c.rdb.Pipelined(rctx, func(p redis.Pipeliner) error {
			for _, vk := range vkeys {
				overwriteScript.Eval(rctx, p, keysFor(vk), c.overwriteArgs(nil, 0)...)
			}
			return nil
		})
	}
	for _, vk := range vkeys {
		c.flights.forget(vk)
	}
	if err != nil {
		c.redisError(err)
		return fmt.Errorf("cacheaside: invalidate: shared copy may be stale: %w", err)
	}
	return nil
}

// Stats returns a snapshot of the Cache's counters.
func (c *Cache[K, V]) Stats() Stats { return c.stats.snapshot() }

// Close stops the Cache: later calls return [ErrClosed], loads in flight
// have their contexts cancelled, and Close waits for every goroutine the
// Cache started. It does not close the Redis client. Close is safe to call
// more than once; later calls return nil at once.
func (c *Cache[K, V]) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.stopLife()
	c.wg.Wait()
	return nil
}

func (c *Cache[K, V]) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// redisError counts a Redis fault. Faults are never returned by Get.
func (c *Cache[K, V]) redisError(error) {
	c.stats.redisErrors.Add(1)
}
