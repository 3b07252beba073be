package cacheaside

import (
	"hash/maphash"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// local is the optional in-process cache (L1), built on otter and keyed by
// the value's Redis key. It keeps results, "not found" answers included,
// for at most its TTL and never past the expiry of the Redis entry they
// came from.
//
// The rule: a result whose Redis read or load began before an invalidation
// of its key does not stay in L1 after that invalidation. Invalidate and
// Set on this process invalidate before they write Redis and again after;
// the backplane (backplane.go) invalidates what other processes name. Each
// invalidation advances epoch, a logical clock, and records the new epoch
// in the key's stripe of dropped, then drops the key. A flight reads epoch
// before its Redis read or load, and puts its result only if no
// invalidation of the key's stripe came since, checked and written
// atomically with respect to the invalidation's drop of the key: a Get
// that starts after an invalidation was applied never finds an older
// value in L1. A stripe is
// shared by 1/dropStripes of the keys; an invalidation of one of them
// costs the others' puts in flight at that moment, not correctness.
//
// The backplane may miss invalidations while it is not subscribed, so an
// entry is trusted by healthy reads (WithLocalFirst) only if its read began
// after the current subscription was confirmed (verified). A read during a
// Redis outage takes any entry, since the alternative is the database.
type local[V any] struct {
	c   *otter.Cache[string, localEntry[V]]
	ttl time.Duration
	// epoch is advanced by every invalidation, local or remote, and by
	// every confirmed subscription. Flights read it before they start.
	epoch atomic.Uint64
	// dropped[i] is the epoch of the latest invalidation of a key of
	// stripe i.
	dropped [dropStripes]atomic.Uint64
	// verified is the epoch at which the backplane's current subscription
	// was confirmed; 0 while it has none.
	verified atomic.Uint64
	seed     maphash.Seed
}

// dropStripes is the number of stripes of local.dropped: 8 KiB a Cache.
// Invalidating a key discards the L1 writes of the other keys of its
// stripe whose reads are in flight at that moment, about 1 in 1024.
const dropStripes = 1024

type localEntry[V any] struct {
	val      V
	notFound bool
	stored   int64  // UnixNano when written
	expires  int64  // UnixNano
	epoch    uint64 // when its read or load began
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
	return &local[V]{c: c, ttl: ttl, seed: maphash.MakeSeed()}, nil
}

// get returns the entry for vkey if it has not expired. A healthy read
// also requires that no invalidation could have been missed since its
// read began.
func (l *local[V]) get(vkey string, healthy bool) (result[V], bool) {
	e, ok := l.c.GetIfPresent(vkey)
	if !ok || e.expires <= time.Now().UnixNano() || (healthy && !l.trusted(e)) {
		return result[V]{}, false
	}
	r := result[V]{val: e.val, src: fromLocal}
	if e.notFound {
		r.err = ErrNotFound
	}
	return r, true
}

// trusted reports whether e was read under the current subscription.
func (l *local[V]) trusted(e localEntry[V]) bool {
	v := l.verified.Load()
	return v != 0 && e.epoch >= v
}

// put stores r for vkey, expiring at the earlier of now + TTL and
// redisExpiry (zero when unknown), unless vkey was invalidated since
// epoch, the value of l.epoch when the result's Redis read or load began;
// see the type's comment.
func (l *local[V]) put(vkey string, r result[V], redisExpiry time.Time, epoch uint64) {
	now := time.Now().UnixNano()
	exp := now + int64(l.ttl)
	if !redisExpiry.IsZero() {
		exp = min(exp, redisExpiry.UnixNano())
	}
	if exp <= now {
		return
	}
	// The check and the write are one step under the key's bucket lock,
	// which invalidate's removal of the key also takes: an invalidation
	// whose stripe write the check missed removes the entry after it,
	// and one it saw leaves nothing written, not even for an instant (a
	// write followed by a check would show the entry to any Get in
	// between) and not over an entry read after it.
	s := l.stripe(vkey)
	l.c.Compute(vkey, func(old localEntry[V], found bool) (localEntry[V], otter.ComputeOp) {
		if s.Load() > epoch {
			return old, otter.CancelOp
		}
		return localEntry[V]{val: r.val, notFound: r.err != nil, stored: now, expires: exp, epoch: epoch}, otter.WriteOp
	})
}

// refresh is put for a Redis hit: it writes only when the entry is missing,
// older than half the TTL or not trusted, so a hot key does not rewrite L1
// on every Get.
func (l *local[V]) refresh(vkey string, r result[V], redisExpiry time.Time, epoch uint64) {
	if e, ok := l.c.GetIfPresent(vkey); ok && l.trusted(e) && time.Now().UnixNano()-e.stored < int64(l.ttl/2) {
		return
	}
	l.put(vkey, r, redisExpiry, epoch)
}

// beginInvalidate and endInvalidate bracket an Invalidate or Set: begin
// so that no Get of this process finds the key in L1 while Redis is being
// written, end so that a Get whose read began after begin but reached
// Redis before the write does not keep what it read.
func (l *local[V]) beginInvalidate(vkeys ...string) { l.invalidate(vkeys...) }

func (l *local[V]) endInvalidate(vkeys ...string) { l.invalidate(vkeys...) }

// invalidate drops keys, and the results of reads and loads of them in
// flight, when they are put.
func (l *local[V]) invalidate(vkeys ...string) {
	at := l.epoch.Add(1)
	for _, k := range vkeys {
		s := l.stripe(k)
		for old := s.Load(); old < at && !s.CompareAndSwap(old, at); old = s.Load() {
		}
		l.c.Invalidate(k)
	}
}

// stripe returns the entry of dropped for vkey.
func (l *local[V]) stripe(vkey string) *atomic.Uint64 {
	return &l.dropped[maphash.String(l.seed, vkey)%dropStripes]
}

// verifyFromNow trusts, on healthy reads, only the entries whose reads
// begin from now on: the backplane has just subscribed, or it received a
// message it cannot read, which may have named any key.
func (l *local[V]) verifyFromNow() { l.verified.Store(l.epoch.Add(1)) }

// unverify trusts no entry on healthy reads until verifyFromNow: the
// backplane is not subscribed, and may miss invalidations.
func (l *local[V]) unverify() { l.verified.Store(0) }

func (l *local[V]) close() { l.c.StopAllGoroutines() }
