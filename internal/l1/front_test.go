package l1

import (
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFrontHidesWhatTheL1Hides: a key's slot never answers what a healthy
// l.Get would not: after an invalidation of the key, an InvalidateAll, a
// dropped subscription, the lease's end or the entry's expiry.
func TestFrontHidesWhatTheL1Hides(t *testing.T) {
	l := newTestLocal(t)
	f := NewFront[int64](l, 100)
	l.VerifyFromNow()
	put := func(v int) func() { return func() { l.Put("k", v, false, time.Time{}, l.Epoch()) } }
	steps := []struct {
		name string
		do   func()
		want int // 0: no entry
	}{
		{"put", put(1), 1},
		{"invalidated", func() { l.Invalidate("k") }, 0},
		{"put again", put(2), 2},
		{"all invalidated", l.InvalidateAll, 0},
		{"put after the clear", put(3), 3},
		{"subscription dropped", l.Unverify, 0},
		{"resumed and leased", func() { l.Resume(); l.Lease(time.Now().Add(time.Hour)) }, 3},
		{"a message nobody can read", l.VerifyFromNow, 0},
	}
	for _, s := range steps {
		s.do()
		// Load (the lookup by Redis key) puts what it finds in the slot;
		// Get checks the slot alone.
		v, _, ok := f.Load(1, "k")
		if got := deref(v); ok != (s.want != 0) || got != s.want {
			t.Errorf("after %s: Load(1) = %v, %v; want %v", s.name, got, ok, s.want)
		}
		v, _, ok = f.Get(1)
		if got := deref(v); ok != (s.want != 0) || got != s.want {
			t.Errorf("after %s: Get(1) = %v, %v; want %v", s.name, got, ok, s.want)
		}
	}
}

// TestFrontHidesAnEntryOtterNoLongerHolds: the key's slot still holds an
// entry otter has let go of (evicted), which an invalidation of the key
// then finds nothing to remove: Get hides it from the eviction on
// (entry.gone), and after the invalidation (the stripe) too. This is why
// the Front checks every entry rather than being kept in step.
func TestFrontHidesAnEntryOtterNoLongerHolds(t *testing.T) {
	l, f := frontHoldingOne(t)
	l.c.Invalidate("k") // as an eviction does: no stripe advanced
	if v, _, ok := f.Get(1); ok {
		t.Errorf("Get(1) = %v after k left otter, not invalidated; want no entry (otter let go of it)", *v)
	}
	l.Invalidate("k")
	if v, _, ok := f.Get(1); ok {
		t.Errorf("Get(1) = %v after k was invalidated, want no entry", *v)
	}
}

// TestFrontPastExpiry: the slot does not serve an entry past its expiry.
func TestFrontPastExpiry(t *testing.T) {
	l := newTestLocal(t)
	f := NewFront[string](l, 100)
	l.VerifyFromNow()
	l.Put("k", 1, false, time.Now().Add(30*time.Millisecond), l.Epoch())
	if _, _, ok := f.Load("one", "k"); !ok {
		t.Fatal("Load(one) found nothing right after its Put")
	}
	time.Sleep(50 * time.Millisecond)
	if v, _, ok := f.Get("one"); ok {
		t.Errorf("Get(one) = %v past its Redis expiry, want no entry", *v)
	}
}

// TestFrontSlotHoldsOneKey: keys that share a slot take it in turn, and a
// Get never answers one key with another's entry, for keys hashed as
// integers (of 8 and 4 bytes, named or not) and the others.
func TestFrontSlotHoldsOneKey(t *testing.T) {
	type id int32
	t.Run("int64", func(t *testing.T) { slotHoldsOneKey(t, func(k int) int64 { return int64(k) }) })
	t.Run("named int32", func(t *testing.T) { slotHoldsOneKey(t, func(k int) id { return id(k) }) })
	t.Run("string", func(t *testing.T) { slotHoldsOneKey(t, strconv.Itoa) })
	// Integers of 1 and 2 bytes, uint and structs go through maphash.
	t.Run("uint8", func(t *testing.T) { slotHoldsOneKey(t, func(k int) uint8 { return uint8(k) }) })
	t.Run("int16", func(t *testing.T) { slotHoldsOneKey(t, func(k int) int16 { return int16(-k) }) })
	t.Run("uint", func(t *testing.T) { slotHoldsOneKey(t, func(k int) uint { return uint(k) << 40 }) })
	type pair struct {
		A string
		B int8
	}
	t.Run("struct", func(t *testing.T) { slotHoldsOneKey(t, func(k int) pair { return pair{"p", int8(k)} }) })
}

func slotHoldsOneKey[K comparable](t *testing.T, key func(int) K) {
	l := newTestLocal(t)
	f := NewFront[K](l, 2) // 2 slots for 20 keys
	l.VerifyFromNow()
	vkey := func(k int) string { return "k" + strconv.Itoa(k) }
	for k := range 20 {
		l.Put(vkey(k), k+100, false, time.Time{}, l.Epoch())
	}
	for round := range 3 {
		for k := range 20 {
			if v, _, ok := f.Get(key(k)); ok && *v != k+100 {
				t.Fatalf("round %d: Get(%v) = %d, want %d or no entry", round, key(k), *v, k+100)
			}
			if v, _, ok := f.Load(key(k), vkey(k)); !ok || *v != k+100 {
				t.Fatalf("round %d: Load(%v) = %v, %v; want %d", round, key(k), deref(v), ok, k+100)
			}
			if v, _, ok := f.Get(key(k)); !ok || *v != k+100 {
				t.Fatalf("round %d: Get(%v) = %v, %v right after its Load; want %d", round, key(k), deref(v), ok, k+100)
			}
		}
	}
}

// TestFrontHitAllocatesNothing: a Get allocates nothing, and neither does
// a Load of an entry that held the slot before (its frontRef is kept).
func TestFrontHitAllocatesNothing(t *testing.T) {
	l := newTestLocal(t)
	f := NewFront[string](l, 1)
	l.VerifyFromNow()
	l.Put("ka", 1, false, time.Time{}, l.Epoch())
	l.Put("kb", 2, false, time.Time{}, l.Epoch())
	f.Load("a", "ka")
	f.Load("b", "kb")
	allocs := testing.AllocsPerRun(100, func() {
		f.Load("a", "ka") // takes the slot from b
		f.Get("a")
		f.Load("b", "kb")
		f.Get("b")
	})
	if allocs != 0 {
		t.Errorf("Loads and Gets of entries loaded before: %v allocations, want 0", allocs)
	}
}

// TestFrontNeverServesAnInvalidatedRead races a writer, which stores
// version v and invalidates the key, against readers, which read through
// the Front and on a miss put the current version (as a Redis read that
// began at the epoch they read first): a read that starts after the
// invalidation of version v returned never gets an older version.
func TestFrontNeverServesAnInvalidatedRead(t *testing.T) {
	l := newTestLocal(t)
	f := NewFront[int64](l, 100)
	l.VerifyFromNow()
	var version, applied atomic.Int64 // the current version; the newest whose invalidation returned
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stale atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					runtime.Gosched() // let the writer write
				}
				least := applied.Load()
				v, _, ok := f.Get(1)
				if !ok {
					v, _, ok = f.Load(1, "k")
				}
				if !ok {
					epoch := l.Epoch()
					l.Put("k", int(version.Load()), false, time.Time{}, epoch)
					continue
				}
				if int64(*v) < least {
					stale.Add(1)
				}
			}
		})
	}
	for v := int64(1); v <= 500; v++ {
		version.Store(v)
		l.Invalidate("k")
		applied.Store(v)
		runtime.Gosched() // let the readers read this version
	}
	close(stop)
	wg.Wait()
	if n := stale.Load(); n != 0 {
		t.Errorf("%d reads got a version older than one whose invalidation had returned before they started, want 0", n)
	}
}

// TestIndexable: the key types a Front indexes are those whose == is
// exact and total.
func TestIndexable(t *testing.T) {
	type id int16
	type pair struct {
		A string
		B [2]uint8
	}
	type withFloat struct {
		A int
		F float64
	}
	type withIface struct{ A any }
	for _, c := range []struct {
		t    reflect.Type
		want bool
	}{
		{reflect.TypeFor[int](), true},
		{reflect.TypeFor[id](), true},
		{reflect.TypeFor[string](), true},
		{reflect.TypeFor[bool](), true},
		{reflect.TypeFor[pair](), true},
		{reflect.TypeFor[[3]int32](), true},
		{reflect.TypeFor[float64](), false},
		{reflect.TypeFor[complex64](), false},
		{reflect.TypeFor[any](), false},
		{reflect.TypeFor[*int](), false},
		{reflect.TypeFor[chan int](), false},
		{reflect.TypeFor[withFloat](), false},
		{reflect.TypeFor[withIface](), false},
		{reflect.TypeFor[[2]any](), false},
	} {
		if got := Indexable(c.t); got != c.want {
			t.Errorf("Indexable(%v) = %v, want %v", c.t, got, c.want)
		}
	}
}

// TestFrontPastTheLease: the slot stops serving an entry when the
// subscription's lease ends on its own (a frozen Redis renews nothing),
// as l.Get does, and serves a "not found" answer as one.
func TestFrontPastTheLease(t *testing.T) {
	l, err := New[int](100, time.Minute) // not newTestLocal: its lease never ends
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	f := NewFront[string](l, 100)
	l.VerifyFromNow()
	end := time.Now().Add(time.Second) // long enough for the first checks on a busy machine
	l.Lease(end)
	l.Put("k", 0, true, time.Time{}, l.Epoch())
	if _, notFound, ok := f.Load("one", "k"); !ok || !notFound {
		t.Fatalf("Load(one) = notFound %v, %v right after a Put of a not-found answer; want true, true", notFound, ok)
	}
	if _, notFound, ok := f.Get("one"); !ok || !notFound {
		t.Fatalf("Get(one) = notFound %v, %v; want true, true", notFound, ok)
	}
	time.Sleep(time.Until(end) + 10*time.Millisecond)
	if _, _, ok := l.Get("k", true); ok {
		t.Fatal("l.Get(k, healthy) found the entry past the lease")
	}
	if _, _, ok := f.Get("one"); ok {
		t.Error("Get(one) found the entry past the lease, want nothing")
	}
	if _, _, ok := l.Get("k", false); !ok {
		t.Error("l.Get(k, outage) found nothing past the lease, want the entry (an outage read takes it)")
	}
}

// TestFrontHoldsNoMoreThanItsSlots: a slot keeps its entry alive after
// otter let go of it, but only until another key takes the slot: reading
// many distinct keys through an L1 of 8 leaves about 8 entries in otter
// and 8 in the slots reachable, not one per key read.
func TestFrontHoldsNoMoreThanItsSlots(t *testing.T) {
	type big [4096]byte // large enough that a leak shows
	l, err := New[*big](8, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	l.Lease(time.Now().Add(time.Hour))
	l.VerifyFromNow()
	f := NewFront[int](l, 8)
	const n = 2000
	var freed atomic.Int64
	for k := range n {
		v := &big{}
		runtime.SetFinalizer(v, func(*big) { freed.Add(1) })
		vkey := "k" + strconv.Itoa(k)
		l.Put(vkey, v, false, time.Time{}, l.Epoch())
		f.Load(k, vkey)
		f.Get(k)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if live := n - freed.Load(); live <= 64 || time.Now().After(deadline) {
			t.Logf("%d of %d values still reachable", live, n)
			if live > 64 {
				t.Errorf("%d of %d values read through a Front of 8 slots over an L1 of 8 are still reachable, want at most 64", live, n)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFrontNeverOlderThanOtter: a slot never answers an entry older than
// the one otter holds for its key. Without an invalidation, otter's entry
// is replaced by a later read of Redis (GetMany, prefill, an early
// refresh), after an eviction or over the entry: l.Get then returns the
// newer value, and so must the read first, or one process's GetMany
// would return a value and its next Get an older one.
func TestFrontNeverOlderThanOtter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		evict bool
	}{{"evicted then read again", true}, {"replaced", false}} {
		t.Run(tc.name, func(t *testing.T) {
			l, f := frontHoldingOne(t)
			if tc.evict {
				l.c.Invalidate("k") // as an eviction does: no stripe advanced
			}
			l.Put("k", 2, false, time.Time{}, l.Epoch())
			if v, _, ok := l.Get("k", true); !ok || *v != 2 {
				t.Fatalf("l.Get(k) = %v, %v; want 2", deref(v), ok)
			}
			if v, _, ok := f.Get(1); ok && *v != 2 {
				t.Errorf("Get(1) = %d while otter holds 2 for its key, want 2 or no entry", *v)
			}
		})
	}
}

// frontHoldingOne returns a verified L1 holding 1 under Redis key "k" and
// a Front whose slot for key 1 holds that entry.
func frontHoldingOne(t *testing.T) (*Cache[int], *Front[int64, int]) {
	t.Helper()
	l := newTestLocal(t)
	f := NewFront[int64](l, 100)
	l.VerifyFromNow()
	l.Put("k", 1, false, time.Time{}, l.Epoch())
	if v, _, ok := f.Load(1, "k"); !ok || *v != 1 {
		t.Fatalf("Load(1) = %v, %v; want 1", deref(v), ok)
	}
	return l, f
}
