package cacheaside

import (
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// local is the optional in-process cache (L1), built on otter. It keeps
// results, "not found" answers included, for at most its TTL and never
// past the expiry of the Redis entry they came from.
//
// Consistency on this process: Invalidate and Set bump epoch before they
// touch Redis and drop the key after; a flight that read before them puts
// its result and then re-reads epoch, dropping the entry if it moved. So a
// Get that starts after Invalidate returned never finds an older value in
// L1, whichever order the two goroutines run in.
type local[K comparable, V any] struct {
	c     *otter.Cache[K, localEntry[V]]
	ttl   time.Duration
	epoch atomic.Uint64
}

type localEntry[V any] struct {
	val      V
	notFound bool
	stored   int64 // UnixNano when written
	expires  int64 // UnixNano
}

func newLocal[K comparable, V any](size int, ttl time.Duration) (*local[K, V], error) {
	c, err := otter.New(&otter.Options[K, localEntry[V]]{
		MaximumSize: size,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[K, localEntry[V]]) time.Duration {
			return time.Duration(e.Value.expires - time.Now().UnixNano())
		}),
		// Run maintenance on the calling goroutine: the cache then starts no
		// goroutine that Close would have to chase, except otter's periodic
		// clean-up, which Close stops.
		Executor: func(fn func()) { fn() },
	})
	if err != nil {
		return nil, err
	}
	return &local[K, V]{c: c, ttl: ttl}, nil
}

// get returns the entry for k if it has not expired.
func (l *local[K, V]) get(k K) (result[V], bool) {
	e, ok := l.c.GetIfPresent(k)
	if !ok || e.expires <= time.Now().UnixNano() {
		return result[V]{}, false
	}
	r := result[V]{val: e.val, src: fromLocal}
	if e.notFound {
		r.err = ErrNotFound
	}
	return r, true
}

// put stores r for k, expiring at the earlier of now + TTL and redisExpiry
// (zero when unknown). epoch is the value read when the result's Redis read
// or load began; see the type's comment.
func (l *local[K, V]) put(k K, r result[V], redisExpiry time.Time, epoch uint64) {
	now := time.Now().UnixNano()
	exp := now + int64(l.ttl)
	if !redisExpiry.IsZero() {
		exp = min(exp, redisExpiry.UnixNano())
	}
	if exp <= now {
		return
	}
	l.c.Set(k, localEntry[V]{val: r.val, notFound: r.err != nil, stored: now, expires: exp})
	if l.epoch.Load() != epoch {
		l.c.Invalidate(k)
	}
}

// refresh is put for a Redis hit: it writes only when the entry is missing
// or older than half the TTL, so a hot key does not rewrite L1 on every Get.
func (l *local[K, V]) refresh(k K, r result[V], redisExpiry time.Time, epoch uint64) {
	if e, ok := l.c.GetIfPresent(k); ok && time.Now().UnixNano()-e.stored < int64(l.ttl/2) {
		return
	}
	l.put(k, r, redisExpiry, epoch)
}

// beginInvalidate and endInvalidate bracket an Invalidate or Set.
func (l *local[K, V]) beginInvalidate(ks []K) {
	l.epoch.Add(1)
	for _, k := range ks {
		l.c.Invalidate(k)
	}
}

func (l *local[K, V]) endInvalidate(ks []K) {
	for _, k := range ks {
		l.c.Invalidate(k)
	}
}

func (l *local[K, V]) close() { l.c.StopAllGoroutines() }
