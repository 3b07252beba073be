package cacheaside

import (
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// local is the optional in-process cache (L1), built on otter and keyed by
// the value's Redis key. It keeps results, "not found" answers included,
// for at most its TTL and never past the expiry of the Redis entry they
// came from.
//
// Consistency on this process: Invalidate and Set bump epoch before they
// touch Redis and drop the key after; a flight that read before them puts
// its result and then re-reads epoch, dropping the entry if it moved. So a
// Get that starts after Invalidate returned never finds an older value in
// L1, whichever order the two goroutines run in.
//
// Across processes the backplane (backplane.go) drops keys that other
// processes invalidate. While it is not subscribed it may miss some, so
// every entry records the subscription it was written under (sync): a
// healthy read (WithLocalFirst) only trusts entries written under the
// current subscription, while a read during a Redis outage takes any entry,
// since the alternative is the database.
type local[V any] struct {
	c     *otter.Cache[string, localEntry[V]]
	ttl   time.Duration
	epoch atomic.Uint64 // bumped by Invalidate and Set on this process
	sync  atomic.Uint64 // bumped whenever the backplane (re)subscribes or drops
}

type localEntry[V any] struct {
	val      V
	notFound bool
	stored   int64 // UnixNano when written
	expires  int64 // UnixNano
	sync     uint64
}

func newLocal[V any](size int, ttl time.Duration) (*local[V], error) {
	c, err := otter.New(&otter.Options[string, localEntry[V]]{
		MaximumSize: size,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, localEntry[V]]) time.Duration {
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
	return &local[V]{c: c, ttl: ttl}, nil
}

// get returns the entry for vkey if it has not expired. A healthy read
// also requires that no invalidation could have been missed since it was
// written.
func (l *local[V]) get(vkey string, healthy bool) (result[V], bool) {
	e, ok := l.c.GetIfPresent(vkey)
	if !ok || e.expires <= time.Now().UnixNano() || (healthy && e.sync != l.sync.Load()) {
		return result[V]{}, false
	}
	r := result[V]{val: e.val, src: fromLocal}
	if e.notFound {
		r.err = ErrNotFound
	}
	return r, true
}

// put stores r for vkey, expiring at the earlier of now + TTL and
// redisExpiry (zero when unknown). epoch is the value read when the
// result's Redis read or load began; see the type's comment.
func (l *local[V]) put(vkey string, r result[V], redisExpiry time.Time, epoch uint64) {
	now := time.Now().UnixNano()
	exp := now + int64(l.ttl)
	if !redisExpiry.IsZero() {
		exp = min(exp, redisExpiry.UnixNano())
	}
	if exp <= now {
		return
	}
	l.c.Set(vkey, localEntry[V]{val: r.val, notFound: r.err != nil, stored: now, expires: exp, sync: l.sync.Load()})
	if l.epoch.Load() != epoch {
		l.c.Invalidate(vkey)
	}
}

// refresh is put for a Redis hit: it writes only when the entry is missing,
// older than half the TTL or from an earlier subscription, so a hot key
// does not rewrite L1 on every Get.
func (l *local[V]) refresh(vkey string, r result[V], redisExpiry time.Time, epoch uint64) {
	if e, ok := l.c.GetIfPresent(vkey); ok && e.sync == l.sync.Load() && time.Now().UnixNano()-e.stored < int64(l.ttl/2) {
		return
	}
	l.put(vkey, r, redisExpiry, epoch)
}

// beginInvalidate and endInvalidate bracket an Invalidate or Set.
func (l *local[V]) beginInvalidate(vkeys ...string) {
	l.epoch.Add(1)
	l.drop(vkeys...)
}

func (l *local[V]) endInvalidate(vkeys ...string) { l.drop(vkeys...) }

// drop removes keys, for example on an invalidation from another process.
func (l *local[V]) drop(vkeys ...string) {
	for _, k := range vkeys {
		l.c.Invalidate(k)
	}
}

// resync marks every entry as possibly stale for healthy reads: the
// backplane may have missed invalidations.
func (l *local[V]) resync() { l.sync.Add(1) }

func (l *local[V]) close() { l.c.StopAllGoroutines() }
