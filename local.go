package cacheaside

import (
	"context"
	"time"

	"github.com/cacheaside/cacheaside/internal/l1"
)

// local is the in-process cache (internal/l1) seen through the Cache's
// result type: the L1 stores a value or a "not found" answer, a flight
// hands out results.
type local[V any] struct{ *l1.Cache[V] }

func newLocal[V any](size int, ttl time.Duration) (*local[V], error) {
	c, err := l1.New[V](size, ttl)
	if err != nil {
		return nil, err
	}
	return &local[V]{c}, nil
}

// get returns the L1 entry of vkey as a result; see l1.Cache.Get.
func (l *local[V]) get(vkey string, healthy bool) (result[V], bool) {
	return localResult(l.Get(vkey, healthy))
}

// localResult is an L1 entry found (ok) as a result.
func localResult[V any](v *V, notFound, ok bool) (result[V], bool) {
	if !ok {
		return result[V]{}, false
	}
	r := result[V]{val: *v, src: fromLocal}
	if notFound {
		r.err = ErrNotFound
	}
	return r, true
}

// frontGet is the read first's fast path, for a Get of key without a Get
// hook: the entry of key if the L1's Front holds it (see l1.Front.Get),
// counted as a local hit, and nothing once ctx is done or the Cache
// closed, whose errors getResult returns. It returns a pointer into the
// entry, so that the value is copied once, into Get's return.
func (c *Cache[K, V]) frontGet(ctx context.Context, key K) (v *V, notFound, ok bool) {
	if ctx.Err() != nil || c.closed.Load() {
		return nil, false, false
	}
	if v, notFound, ok = c.front.Get(key); ok {
		c.stats.localHits.Add(1)
	}
	return v, notFound, ok
}

// readFirst is the read first of a Get of key, whose Redis key is vkey,
// that frontGet did not answer: a healthy L1 read, which puts the entry it
// finds in key's slot of the Front, if the Cache has one (a K whose == is
// not exact has none: l1.Indexable).
func (c *Cache[K, V]) readFirst(key K, vkey string) (result[V], bool) {
	if c.front == nil {
		return c.l1.get(vkey, true)
	}
	return localResult(c.front.Load(key, vkey))
}

// put stores r, read or loaded from epoch on; see l1.Cache.Put.
func (l *local[V]) put(vkey string, r result[V], redisExpiry time.Time, epoch uint64) {
	l.Put(vkey, r.val, r.err != nil, redisExpiry, epoch)
}

// refresh is put for a Redis hit; see l1.Cache.Refresh.
func (l *local[V]) refresh(vkey string, r result[V], redisExpiry time.Time, epoch uint64) {
	l.Refresh(vkey, r.val, r.err != nil, redisExpiry, epoch)
}

// localStamp returns the stamp of vkey's L1 entry now (l1.Cache.Stamp);
// a zero one without L1.
func (c *Cache[K, V]) localStamp(vkey string) l1.Stamp[V] {
	if c.l1 == nil {
		return l1.Stamp[V]{}
	}
	return c.l1.Stamp(vkey)
}

// localSince returns vkey's L1 entry if one was written since stamp s was
// taken (l1.Cache.GetSince): a flight of this process read or loaded the
// key meanwhile.
func (c *Cache[K, V]) localSince(vkey string, s l1.Stamp[V]) (result[V], bool) {
	if c.l1 == nil {
		return result[V]{}, false
	}
	return localResult(c.l1.GetSince(vkey, s))
}

// localEpoch returns the in-process cache's invalidation epoch, or 0.
func (c *Cache[K, V]) localEpoch() uint64 {
	if c.l1 == nil {
		return 0
	}
	return c.l1.Epoch()
}

// L1 configures the local (in-process) cache of [WithL1]. A zero field
// means its default.
type L1 struct {
	// Size is the most entries the local cache holds. Read first (not
	// OutageOnly), and for key types whose == is exact (integers,
	// strings, booleans, and arrays and structs of them; not floats,
	// interfaces or pointers), it has an index by key in front of it for
	// hot keys:
	// 8 bytes per entry of Size rounded up to a power of two (at most
	// 512 KiB; 128 KiB for the default), and 32 bytes per entry read.
	//
	// Default (zero): 10 000.
	Size int

	// TTL is the longest an entry stays in the local cache; it never
	// outlives the Redis entry it was read from. A non-zero TTL must be
	// at least 1ms.
	//
	// Default (zero): 1 minute.
	TTL time.Duration

	// OutageOnly reads the local cache only while Redis is unavailable
	// (the breaker is open or a call failed), never on a healthy Get, so
	// an outage costs at most one load per key per process per TTL and a
	// healthy Get never sees a local copy.
	//
	// Default (false): the local cache is read first on every Get.
	OutageOnly bool

	// Prefill keeps every process's local cache filled with the warm-up
	// keys ([WithWarmupKeys], [WithWarmup]) as Redis holds them: at start,
	// after each warm-up this process runs, and every 5 seconds (every
	// half TTL if that is shorter), the cache reads them with MGET (500 a
	// round) and stores the hits locally. When Redis then becomes
	// unavailable, each process answers those keys locally even if it
	// never read them before, instead of loading them from the database.
	// It needs warm-up keys. WithWarmup's function is called at every
	// round. Size must be large enough for the keys.
	//
	// Default (false): no prefill.
	Prefill bool
}
