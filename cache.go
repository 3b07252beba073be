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
//     takes the fill lock with SET NX PX and reads the key's generation (a
//     unique token, created if absent).
//  3. The lock holder keeps the lock alive while it loads, waits for one of
//     the Cache's load slots ([WithMaxConcurrentLoads]), calls the loader
//     under the load timeout and stores the result with a conditional fill:
//     one script that writes the value with a jittered TTL and deletes the
//     lock only if the generation is still the one it read.
//     [Cache.Invalidate] and [Cache.Set] change the generation (and delete
//     the lock), so a fill that started before them writes nothing and the
//     load is redone. A generation Redis evicted is missing, which refuses
//     the fill the same way.
//  4. A process that finds the lock taken polls with a jittered backoff
//     until the holder's value lands, taking the lock over if the holder died
//     and the lock expired. With a lock wait ([FillLock].Wait) that runs out
//     it loads by itself; that value is written only if the generation did
//     not change meanwhile.
//
// A slow database makes Gets slow, never failed: the load slots, the lock
// and its waiters only wait, each caller for as long as its own context
// allows, and the database sees each missing key loaded once.
//
// Across a fleet this gives at most one load per key per lock TTL while Redis
// is healthy. When Redis fails, Get still returns the loader's value with a
// nil error: a Redis fault is counted in [Stats], never returned. Every
// Redis call has a time budget ([WithRedisTimeout]) and goes through a
// circuit breaker ([WithCircuitBreaker]), one per primary on a Redis Cluster.
// A [Cache.Set] or [Cache.Invalidate] that cannot reach Redis returns an
// error and is queued: it is replayed as an invalidation as soon as Redis
// answers, and until then the Cache serves no Redis copy of the key (see
// [ErrQueued]).
//
// The Cache works over any go-redis v9 client: a single server, a
// Sentinel-managed primary (redis.NewFailoverClient) or a Redis Cluster
// (redis.NewClusterClient), also as built by redis.NewUniversalClient.
//
// # Keys in Redis
//
// For a key that encodes to s (see [WithKeyFunc]) the cache uses
// <prefix>{s} for the value, <prefix>{s}:lock for the fill lock and
// <prefix>{s}:gen for the generation. The braces are a Redis Cluster hash
// tag: all three keys live in one slot. When s is empty, contains '}' or
// starts with '#', the tag is "#" and the hex SHA-256 of s. Values are
// stored in a small versioned envelope around the codec's bytes; entries
// the cache cannot read (corrupt, foreign, of another Redis type, or from
// an incompatible future version) are misses, counted in [Stats].Corrupt.
//
// The key does not name the value type, so two caches with the same
// prefix (the default "ca:" included) and keys that encode alike share
// keys. The envelope therefore carries a 32-bit fingerprint of the value
// type's name (reflect) and the codec's type: an entry whose fingerprint
// is not this cache's is a miss, never decoded into the wrong type. Such
// caches still overwrite each other's entries, so give each its own
// [WithPrefix]. Entries written by v0.1, which have no fingerprint, are
// read as before until they expire.
//
// # Shared values
//
// Callers that share a flight receive the same V, and so do later callers
// of the same key: hits on the in-process cache, and Redis reads of a key
// whose bytes are those the cache decoded twice in a row before (a hot
// key's value is decoded once, not once per read). Callers of different
// keys never share a value. When V holds references (pointers, slices,
// maps), callers must treat the value as read-only.
package cacheaside

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/audit"
	"github.com/cacheaside/cacheaside/internal/decodememo"
	"github.com/cacheaside/cacheaside/internal/flight"
	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/readbatch"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/cacheaside/cacheaside/internal/replay"
	"github.com/cacheaside/cacheaside/internal/tagclock"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// ErrClosed is returned by calls on a Cache after [Cache.Close].
var ErrClosed = errors.New("cacheaside: cache closed")

// Cache is a read-through cache of values of type V under keys of type K,
// stored in Redis and loaded on a miss by a [LoadFunc]. A Cache is safe for
// concurrent use by multiple goroutines. Close it when done; it does not
// close the Redis client.
type Cache[K comparable, V any] struct {
	rdb    redis.UniversalClient // the client given to New, or its timeout clone
	sub    redis.UniversalClient // the client given to New: for the backplane's subscription
	load   LoadFunc[K, V]
	encode keyEncoder[K]
	cfg    config
	logger *slog.Logger

	flights flight.Group[result[V]]
	stats   counters
	guard   *redisguard.Guard // shared with the Caches on the same client and guard settings (guard.go)
	// releaseGuard unsubscribes from the guard and lets go of it; the
	// last Cache to let go closes it.
	releaseGuard func()
	reads        *readbatch.Group     // Get's Redis reads, batched per node (hitread.go)
	l1           *local[V]            // nil without WithLocalCache
	front        *l1.Front[K, V]      // l1's index by key, for the read first; nil without it or for a K that l1.Indexable rejects
	audit        *audit.Auditor[K, V] // nil without WithAudit (audit.go)
	loads        *semaphore.Weighted  // nil with WithMaxConcurrentLoads(0)
	hb           heartbeat            // the fill locks held by loads in flight
	warm         *warmup[K]

	lock        *protocol.Locker    // the fill lock's Redis I/O (lock.go)
	replay      *replay.Queue       // invalidations not applied in Redis yet (replay.go)
	confirmer   *l1.Confirmer       // nil without WithSyncInvalidation (confirm.go)
	replayAcks  sync.WaitGroup      // replayed batches waiting for confirmations (confirm.go)
	tokenPrefix string              // unique to this Cache: starts its lock tokens, generations and messages
	fingerprint uint32              // of V and the codec, in every envelope written (typeFingerprint)
	decoded     *decodememo.Memo[V] // the value of the payload decoded last (codec.go)
	lastReload  atomic.Int64        // UnixNano of the last Cluster slot-map reload asked for
	// clockKey is the prefix's invalidation clock, read with reads of
	// values (clear.go; a Get's, unless the lease holds); on a Cluster,
	// reads carry one of its replicas instead (clearcluster.go; nil
	// elsewhere). clock is what this process knows of it.
	clockKey string
	replicas *tagclock.Replicas
	clock    tagclock.Known
	memo     tagclock.Memo      // the last clock value read, parsed
	lease    tagclock.Lease     // how long hit reads may go without the clock (read.go)
	versions tagclock.Versions  // of the prefix's tags (tags.go)
	lostKeys singleflight.Group // recreations of lost clock keys (clockloss.go)

	// leaveBackplane leaves the client's shared invalidation
	// subscription; nil without WithLocalCache.
	leaveBackplane func()
	// resumed is set when the backplane resumed after a drop, until the
	// next lease lets the L1 be trusted again (backplane.go).
	resumed    atomic.Bool
	refreshing sync.Map      // value keys this process is refreshing early
	refreshSem chan struct{} // bounds early refreshes
	// prefillKick asks WithLocalPrefill's goroutine for a round now.
	prefillKick chan struct{}

	// tracker registers every goroutine the Cache starts, so that Close can
	// wait for them; life is cancelled by Close and is the parent of every
	// flight's context.
	tracker  tracker
	closed   atomic.Bool // a lock-free copy of tracker.closed for Get
	life     context.Context
	stopLife context.CancelFunc
}

// New returns a Cache that stores values in rdb and loads missing ones with
// load. rdb may be a *redis.Client, a *redis.ClusterClient, a Sentinel
// failover client or any other redis.UniversalClient; the Cache does not
// take ownership of it. New validates every option and returns one error
// that names each invalid one. New does no I/O. The Caches built on one
// client share its invalidation subscription (with an L1) and its restart
// watcher (with warm-up keys): one pub/sub connection and one goroutine
// per client, started by the first such Cache and stopped by the last
// one's Close.
func New[K comparable, V any](rdb redis.UniversalClient, load LoadFunc[K, V], opts ...Option) (*Cache[K, V], error) {
	cfg := defaultConfig()
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	var errs []error
	if rdb == nil || (reflect.ValueOf(rdb).Kind() == reflect.Pointer && reflect.ValueOf(rdb).IsNil()) {
		errs = append(errs, errors.New("nil Redis client"))
	}
	if load == nil {
		errs = append(errs, errors.New("nil LoadFunc"))
	}
	enc, err := newKeyEncoder[K](cfg.keyFunc)
	if err != nil {
		errs = append(errs, err)
	}
	warm, err := newWarmup[K](&cfg)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.batchLoad != nil {
		if b, ok := cfg.batchLoad.(BatchLoadFunc[K, V]); !ok {
			errs = append(errs, fmt.Errorf("WithBatchLoader: got %T, want cacheaside.BatchLoadFunc[%v, %v]", cfg.batchLoad, reflect.TypeFor[K](), reflect.TypeFor[V]()))
		} else if b == nil {
			errs = append(errs, errors.New("WithBatchLoader: nil function"))
		}
	}
	same, err := checkAudit[V](&cfg)
	if err != nil {
		errs = append(errs, err)
	}
	if err := cfg.resolve(); err != nil {
		errs = append(errs, err)
	}
	if rdb != nil && errs == nil {
		if err := checkReplicaAcks(rdb, &cfg); err != nil {
			errs = append(errs, err)
		}
		if err := checkSyncInvalidation(rdb, &cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cacheaside: invalid configuration:\n%w", err)
	}

	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	c := &Cache[K, V]{
		rdb:         rdb,
		sub:         rdb,
		load:        load,
		encode:      enc,
		cfg:         cfg,
		logger:      cfg.logger,
		warm:        warm,
		tokenPrefix: hex.EncodeToString(id[:]) + ".",
		fingerprint: typeFingerprint[V](cfg.codec),
		decoded:     decodememo.New[V](),
	}
	c.flights.Track = cfg.waiterCtxs
	if cfg.localSize > 0 {
		local, err := newLocal[V](cfg.localSize, cfg.localTTL)
		if err != nil {
			return nil, fmt.Errorf("cacheaside: invalid configuration:\nWithL1: %w", err)
		}
		c.l1 = local
		if cfg.localFirst {
			c.front = l1.NewFront[K](local.Cache, cfg.localSize)
		}
	}
	c.refreshSem = make(chan struct{}, refreshSlots)
	if cfg.maxLoads > 0 {
		c.loads = semaphore.NewWeighted(int64(cfg.maxLoads))
	}
	c.guard, c.rdb, c.releaseGuard = newGuard(&cfg, rdb, c.breakerChanged)
	c.life, c.stopLife = context.WithCancel(context.Background())
	c.lock = c.newLocker()
	c.confirmer = c.newConfirmer()
	c.replay = c.newReplay()
	c.reads = c.newReads()
	if _, ring := rdb.(*redis.Ring); !ring {
		c.clockKey = tagclock.Key(c.cfg.prefix) // on a Ring: none (ErrClearUnsupported)
	}
	c.replicas = c.newReplicas(rdb)
	c.prefillKick = make(chan struct{}, 1)
	c.startWatcher()
	c.startPrefill()
	c.startBackplane()
	c.startReplay()
	c.startAudit(same)
	return c, nil
}

// slowLimit is the longest the guard waits for a call to a node that
// answers other calls (life.go): the lock wait, which a Get already
// accepts to wait for a value another process loads, or the lock TTL when
// the lock wait has no bound; never less than the budget.
func slowLimit(cfg config) time.Duration {
	if cfg.lockWait >= 0 {
		return max(cfg.redisTTL, cfg.lockWait)
	}
	return max(cfg.redisTTL, cfg.lockTTL)
}

// generationTTL is how long a generation lives after it is written or a
// lock is taken under it. It only has to outlive the loads that compare
// against it: a fill that finds it gone is refused and redone, never
// accepted, so a shorter life costs reloads, not correctness. Four times a
// load timeout plus a lock TTL covers a wait for a load slot and the load.
func generationTTL(cfg config) time.Duration {
	return max(time.Minute, 4*(cfg.loadTimeout+cfg.lockTTL))
}

// Stats returns a snapshot of the Cache's counters and breaker state.
func (c *Cache[K, V]) Stats() Stats {
	s := c.stats.snapshot()
	g := c.guard.Counts()
	s.RedisSlow, s.RedisSkipped, s.Abandoned, s.BreakerOpens = g.Slow, g.Skipped, g.Abandoned, g.Opens
	s.Breaker = breakerState(c.guard.State())
	q := c.replay.Counts()
	s.InvalidationsQueued, s.InvalidationsReplayed, s.InvalidationsDropped, s.InvalidationsPending = q.Queued, q.Replayed, q.Dropped, q.Pending
	c.auditCounts(&s)
	return s
}

// Close stops the Cache: later calls return [ErrClosed], loads and
// warm-ups in flight have their contexts cancelled, and Close waits for
// every goroutine the Cache started, including Redis calls abandoned at the
// Redis timeout (they end by the client's own timeouts; when Caches share a
// client and Redis settings, their Redis guard is one, and the last of them
// to close waits for the calls any of them abandoned). It does not close
// the Redis client. Close is safe to call more than once; later calls
// return nil at once.
//
// Before it stops, Close replays the invalidations still queued (see
// [ErrQueued] and [Cache.Flush]) for up to one second, or the Redis
// timeout if that is longer (plus the timeout of [WithReplicaAcks], which
// a replica that lags waits out), and returns an error matching [ErrQueued]
// if some are left: they are lost, and other processes may serve the old
// values until their TTL. Call Flush first to wait longer.
func (c *Cache[K, V]) Close() error {
	if !c.tracker.close() {
		return nil
	}
	c.closed.Store(true)
	var err error
	if c.replay.Len() > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), closeFlush(c.cfg))
		err = c.flush(ctx)
		cancel()
	}
	c.stopLife()
	c.stopWatcher()
	c.stopBackplane()
	c.tracker.wg.Wait()
	c.releaseGuard() // the last Cache on a shared guard waits for the Redis calls it abandoned
	if c.l1 != nil {
		c.l1.Close()
	}
	return err
}

// breakerChanged runs on every breaker state change, under the breaker's
// lock.
func (c *Cache[K, V]) breakerChanged(from, to BreakerState) {
	if from != BreakerClosed && to == BreakerClosed {
		c.warm.check.Nudge() // Redis is back: check at once whether it came back empty
		c.replay.Kick()      // and replay what is queued
	}
}

// redisError counts a Redis fault. Faults are never returned by Get.
//
// On a Redis Cluster it also asks the client to re-read the slot map, at
// most once per clusterReload: go-redis re-reads it only after a MOVED or
// ASK reply or every ClusterStateReloadInterval (60 s by default), and a
// dead primary answers neither, so without this the cache would keep
// sending a failed-over slot's commands to the dead node for up to a
// minute after its replica took over.
func (c *Cache[K, V]) redisError(err error) {
	if errors.Is(err, ErrNotReplicated) {
		return // Redis answered: the replicas lag
	}
	c.stats.redisErrors.Add(1)
	cc, ok := c.rdb.(*redis.ClusterClient)
	if !ok || !redisguard.IsOutage(err) {
		return
	}
	now := time.Now().UnixNano()
	last := c.lastReload.Load()
	if now-last >= int64(clusterReload) && c.lastReload.CompareAndSwap(last, now) {
		cc.ReloadState(context.Background()) // lazy: marks the map stale, returns at once
		if c.replicas != nil {
			c.replicas.Reload()
		}
	}
}

// clusterReload bounds how often a Redis fault makes a Cluster client
// re-read its slot map.
const clusterReload = 250 * time.Millisecond
