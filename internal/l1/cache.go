// Package l1 is cacheaside's optional in-process cache (L1) and the
// backplane that keeps the L1s of a fleet in step: invalidation messages
// over Redis pub/sub, in a binary-safe format.
package l1

import (
	"hash/maphash"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Cache is the optional in-process cache (L1), built on otter and keyed by
// the value's Redis key. It keeps results, "not found" answers included,
// for at most its TTL and never past the expiry of the Redis entry they
// came from.
//
// The rule: a result whose Redis read or load began before an invalidation
// of its key does not stay in L1 after that invalidation. Invalidate and
// Set on this process invalidate before they write Redis and again after;
// the backplane (listener.go) invalidates what other processes name. Each
// invalidation advances epoch, a logical clock, and records the new epoch
// in the key's stripe of dropped, then drops the key. A flight reads epoch
// before its Redis read or load, and puts its result only if no
// invalidation of the key's stripe came since, checked and written
// atomically with respect to the invalidation's drop of the key: a Get
// that starts after an invalidation was applied never finds an older
// value in L1. Front (front.go), the index by the caller's key that the
// read first looks in before otter, holds entries invalidation does not
// remove from it, and hides them by the same test. A stripe is
// shared by 1/dropStripes of the keys; an invalidation of one of them
// costs the others' puts in flight at that moment, not correctness.
//
// The backplane may miss invalidations while it is not subscribed, so an
// entry is trusted by healthy reads (WithLocalFirst) only if its read began
// after the current subscription was confirmed (verified), and only while
// the subscription's lease holds (leased; lease.go): a subscription Redis
// closed without the process noticing stops renewing it. A read during a
// Redis outage takes any entry, since the alternative is the database.
type Cache[V any] struct {
	c   *otter.Cache[string, *entry[V]] // entries by pointer: a hit copies 8 bytes out of otter, not the whole entry
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
	// cleared is the epoch of the latest InvalidateAll.
	cleared atomic.Uint64
	// paused is what verified held before the backplane dropped: Resume
	// restores it once every invalidation missed meanwhile is applied.
	paused atomic.Uint64
	// leased is when the subscription's lease ends for healthy reads, in
	// nanoseconds since base (Lease); 0 until the first lease.
	leased atomic.Int64
	seed   maphash.Seed
	// base is when the L1 was made: entries keep their times as monotonic
	// nanoseconds since base, which a read gets with one clock read
	// (time.Since), not the two of time.Now.
	base time.Time
}

// dropStripes is the number of stripes of Cache.dropped: 8 KiB an L1.
// Invalidating a key discards the L1 writes of the other keys of its
// stripe whose reads are in flight at that moment, about 1 in 1024.
const dropStripes = 1024

type entry[V any] struct {
	val      V
	notFound bool
	stored   int64          // when written, in nanoseconds since base
	expires  int64          // in nanoseconds since base
	epoch    uint64         // when its read or load began
	dropped  *atomic.Uint64 // its key's stripe of Cache.dropped, which Front.Get checks
	front    atomic.Value   // the *frontRef of its Front's slot, made by the first Front.Load that found it
	// gone is set when otter lets go of the entry (evicted, replaced,
	// invalidated): a Front slot, which otter does not know, then stops
	// serving it, since a later read of the key may have put a newer one.
	gone atomic.Bool
}

// New returns an L1 of up to size entries, each kept at most ttl.
func New[V any](size int, ttl time.Duration) (*Cache[V], error) {
	c, err := otter.New(&otter.Options[string, *entry[V]]{
		MaximumSize: size,
		// Run maintenance on the calling goroutine: the cache then starts no
		// goroutine that Close would have to chase, except otter's periodic
		// clean-up, which Close stops.
		Executor: func(fn func()) { fn() },
		// Under the bucket's lock, so that a Put's replacement and the
		// mark are one step for Front.Get.
		OnAtomicDeletion: func(ev otter.DeletionEvent[string, *entry[V]]) { ev.Value.gone.Store(true) },
	})
	if err != nil {
		return nil, err
	}
	return &Cache[V]{c: c, ttl: ttl, seed: maphash.MakeSeed(), base: time.Now()}, nil
}

// Get returns the entry for vkey if it has not expired: its value, or
// notFound for a cached "not found" answer. A healthy read also requires
// that no invalidation could have been missed since its read began. v
// points into the entry, which nobody writes once stored (a Put stores a
// new one): read it, do not modify it. A pointer, so that a hit copies
// the value once, into the caller's result, rather than once per return.
//
// Expiry is checked here, with one read of the monotonic clock, not by
// otter: an otter with an ExpiryCalculator reads the clock on every Get
// too, and also reschedules the entry in its timer wheel for every read it
// drains, which made a hit cost twice a clock read more (BenchmarkLocalGet).
// An expired entry stays in otter until a Put replaces it or the size
// bound evicts it; Get never returns it.
func (l *Cache[V]) Get(vkey string, healthy bool) (v *V, notFound, ok bool) {
	e, ok := l.get(vkey, healthy)
	if !ok {
		return nil, false, false
	}
	return &e.val, e.notFound, true
}

// get is Get, returning the entry.
func (l *Cache[V]) get(vkey string, healthy bool) (*entry[V], bool) {
	e, ok := l.c.GetIfPresent(vkey)
	if !ok {
		return nil, false
	}
	now := l.now()
	if now >= e.expires || (healthy && (!l.trusted(e) || now >= l.leased.Load())) {
		return nil, false
	}
	return e, true
}

// now is the time in nanoseconds since base.
func (l *Cache[V]) now() int64 { return int64(time.Since(l.base)) }

// trusted reports whether e was read under the current subscription.
func (l *Cache[V]) trusted(e *entry[V]) bool {
	v := l.verified.Load()
	return v != 0 && e.epoch >= v
}

// Put stores v (or a "not found" answer) for vkey, expiring at the earlier of now + TTL and
// redisExpiry (zero when unknown), unless vkey was invalidated since
// epoch, the value of l.epoch when the result's Redis read or load began;
// see the type's comment.
func (l *Cache[V]) Put(vkey string, v V, notFound bool, redisExpiry time.Time, epoch uint64) {
	now := l.now()
	exp := now + int64(l.ttl)
	if !redisExpiry.IsZero() {
		exp = min(exp, int64(redisExpiry.Sub(l.base)))
	}
	if exp <= now {
		return
	}
	// The check and the write are one step under the key's bucket lock,
	// which Invalidate's removal of the key also takes: an invalidation
	// whose stripe write the check missed removes the entry after it,
	// and one it saw leaves nothing written, not even for an instant (a
	// write followed by a check would show the entry to any Get in
	// between) and not over an entry read after it.
	s := l.stripe(vkey)
	l.c.Compute(vkey, func(old *entry[V], found bool) (*entry[V], otter.ComputeOp) {
		if s.Load() > epoch || l.cleared.Load() > epoch {
			return old, otter.CancelOp
		}
		return &entry[V]{val: v, notFound: notFound, stored: now, expires: exp, epoch: epoch, dropped: s}, otter.WriteOp
	})
}

// Stamp identifies the entry a key held at one moment, or its having
// none. Every Put that writes makes a new entry, so a key whose entry is
// not the one of a stamp was written since the stamp was taken (or
// dropped). A stamp keeps its entry alive: it is never mistaken for a
// newer one.
type Stamp[V any] struct{ e *entry[V] }

// Stamp returns the stamp of vkey's entry now, expired or not.
func (l *Cache[V]) Stamp(vkey string) Stamp[V] {
	e, _ := l.c.GetIfPresent(vkey)
	return Stamp[V]{e}
}

// GetSince is Get for a read during an outage (not healthy) that takes
// only an entry written since s was taken: ok is false when vkey has no
// entry, or still the entry of s.
func (l *Cache[V]) GetSince(vkey string, s Stamp[V]) (v *V, notFound, ok bool) {
	e, ok := l.get(vkey, false)
	if !ok || e == s.e {
		return nil, false, false
	}
	return &e.val, e.notFound, true
}

// Refresh is Put for a Redis hit: it writes only when the entry is missing,
// expired, older than half the TTL or not trusted, so a hot key does not rewrite L1
// on every Get.
func (l *Cache[V]) Refresh(vkey string, v V, notFound bool, redisExpiry time.Time, epoch uint64) {
	if e, ok := l.c.GetIfPresent(vkey); ok && l.trusted(e) {
		if now := l.now(); now < e.expires && now-e.stored < int64(l.ttl/2) {
			return
		}
	}
	l.Put(vkey, v, notFound, redisExpiry, epoch)
}

// Invalidate drops keys, and the results of reads and loads of them in
// flight, when they are put. Invalidate and Set call it before they write
// Redis, so that no Get of this process finds the key in L1 meanwhile, and
// again after, so that a Get whose read began in between but reached
// Redis before the write does not keep what it read.
func (l *Cache[V]) Invalidate(vkeys ...string) {
	at := l.epoch.Add(1)
	for _, k := range vkeys {
		s := l.stripe(k)
		for old := s.Load(); old < at && !s.CompareAndSwap(old, at); old = s.Load() {
		}
		l.c.Invalidate(k)
	}
}

// InvalidateAll drops every entry, and the results of reads and loads in
// flight when they are put: a Clear calls it before and after it writes
// Redis, as Invalidate does for keys.
func (l *Cache[V]) InvalidateAll() {
	at := l.epoch.Add(1)
	for old := l.cleared.Load(); old < at && !l.cleared.CompareAndSwap(old, at); old = l.cleared.Load() {
	}
	l.c.InvalidateAll()
}

// stripe returns the entry of dropped for vkey.
func (l *Cache[V]) stripe(vkey string) *atomic.Uint64 {
	return &l.dropped[maphash.String(l.seed, vkey)%dropStripes]
}

// VerifyFromNow trusts, on healthy reads, only the entries whose reads
// begin from now on: the backplane has just subscribed, or it received a
// message it cannot read, which may have named any key.
func (l *Cache[V]) VerifyFromNow() {
	l.paused.Store(0)
	l.verified.Store(l.epoch.Add(1))
}

// Unverify trusts no entry on healthy reads until VerifyFromNow or
// Resume, and a new Lease: the backplane is not subscribed, and may miss
// invalidations.
func (l *Cache[V]) Unverify() {
	l.leased.Store(0)
	if v := l.verified.Swap(0); v != 0 {
		l.paused.Store(v)
	}
}

// Resume trusts again, after Unverify, the entries trusted before it: the
// backplane is subscribed again and has applied every invalidation sent
// while it was not (the stream of feed.go), so those entries are as good
// as before the drop. Without an Unverify to undo it is VerifyFromNow.
func (l *Cache[V]) Resume() {
	if p := l.paused.Swap(0); p != 0 {
		l.verified.Store(p)
		return
	}
	l.VerifyFromNow()
}

// Lease lets healthy reads trust the L1 until until (if that is later
// than what an earlier Lease allowed): the subscription proved it had
// applied every invalidation its fleet did not wait for (lease.go).
func (l *Cache[V]) Lease(until time.Time) {
	at := int64(until.Sub(l.base))
	for old := l.leased.Load(); old < at && !l.leased.CompareAndSwap(old, at); old = l.leased.Load() {
	}
}

// Epoch returns the current epoch: a flight reads it before its Redis
// read or load and passes it to Put.
func (l *Cache[V]) Epoch() uint64 { return l.epoch.Load() }

// Close stops otter's clean-up goroutine.
func (l *Cache[V]) Close() { l.c.StopAllGoroutines() }
