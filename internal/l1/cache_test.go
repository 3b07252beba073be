package l1

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"
	"go.uber.org/goleak"
)

// The in-process cache's bookkeeping, without Redis: which writes an
// invalidation takes back, which entries healthy reads trust, and the
// message format. The races these rules close are shown end to end, on
// real Redis servers, in the root package's local_window_test.go.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestLocal(t *testing.T) *Cache[int] {
	t.Helper()
	l, err := New[int](100, time.Minute)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l.Lease(time.Now().Add(time.Hour)) // no backplane here: its lease never ends
	t.Cleanup(l.Close)
	return l
}

func TestLocalDropsPutsThatRacedAnInvalidation(t *testing.T) {
	l := newTestLocal(t)
	l.VerifyFromNow()
	began := l.Epoch() // reads of k and other begin
	other := "other"
	for i := 0; l.stripe(other) == l.stripe("k"); i++ {
		other = "other" + strings.Repeat("+", i)
	}
	l.Invalidate("k") // k changes while they are in flight

	l.Put("k", 1, false, time.Time{}, began)
	if v, _, ok := l.Get("k", false); ok {
		t.Errorf("Get(k) = %v after a put whose read began before k's invalidation, want no entry", *v)
	}
	l.Put(other, 2, false, time.Time{}, began)
	if v, _, ok := l.Get(other, true); !ok || *v != 2 {
		t.Errorf("Get(%q) = %v, %v; want 2: only k was invalidated, and %q is in another stripe", other, deref(v), ok, other)
	}
	l.Put("k", 3, false, time.Time{}, l.Epoch())
	if v, _, ok := l.Get("k", true); !ok || *v != 3 {
		t.Errorf("Get(k) = %v, %v; want 3, read after the invalidation", deref(v), ok)
	}
}

// TestLocalNeverServesPastExpiry: an entry is not returned, healthy or
// not, once the earlier of its TTL and its Redis entry's expiry has
// passed, and a Redis hit's Refresh of an expired entry writes it again
// (the check is the L1's own since otter no longer holds the expiry).
func TestLocalNeverServesPastExpiry(t *testing.T) {
	l, err := New[int](100, 400*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	l.Lease(time.Now().Add(time.Hour)) // no backplane here: its lease never ends
	t.Cleanup(l.Close)
	l.VerifyFromNow()
	l.Put("ttl", 1, false, time.Time{}, l.Epoch())
	l.Put("redis", 2, false, time.Now().Add(50*time.Millisecond), l.Epoch())
	if _, _, ok := l.Get("redis", true); !ok {
		t.Fatal("Get(redis) found nothing right after its Put")
	}
	time.Sleep(80 * time.Millisecond) // well within half the TTL
	for _, healthy := range []bool{true, false} {
		if v, _, ok := l.Get("redis", healthy); ok {
			t.Errorf("Get(redis, healthy=%v) = %v after its Redis expiry, want no entry", healthy, *v)
		}
	}
	l.Refresh("redis", 3, false, time.Now().Add(time.Minute), l.Epoch())
	if v, _, ok := l.Get("redis", true); !ok || *v != 3 {
		t.Errorf("Get(redis) = %v, %v after a Refresh of its expired entry; want 3", deref(v), ok)
	}
	time.Sleep(400 * time.Millisecond)
	for _, healthy := range []bool{true, false} {
		if v, _, ok := l.Get("ttl", healthy); ok {
			t.Errorf("Get(ttl, healthy=%v) = %v past the L1 TTL, want no entry", healthy, *v)
		}
	}
}

func TestLocalTrustsOnlyReadsUnderTheCurrentSubscription(t *testing.T) {
	l := newTestLocal(t)
	steps := []struct {
		do      func()
		key     string
		healthy bool // whether a healthy read may use key
	}{
		{func() { l.Put("a", 1, false, time.Time{}, l.Epoch()) }, "a", false}, // never subscribed
		{l.VerifyFromNow, "a", false},                                         // read before the subscription
		{func() { l.Put("b", 2, false, time.Time{}, l.Epoch()) }, "b", true},
		{l.Unverify, "b", false},                                                  // the subscription dropped
		{l.VerifyFromNow, "b", false},                                             // and came back: b may have missed an invalidation
		{func() { l.Refresh("b", 2, false, time.Time{}, l.Epoch()) }, "b", false}, // no lease since the drop
		{func() { l.Lease(time.Now().Add(time.Hour)) }, "b", true},
		{l.VerifyFromNow, "b", false}, // a message nobody can read
	}
	for i, s := range steps {
		s.do()
		if _, _, ok := l.Get(s.key, true); ok != s.healthy {
			t.Errorf("step %d: healthy get(%s) found it = %v, want %v", i, s.key, ok, s.healthy)
		}
		if _, _, ok := l.Get(s.key, false); !ok {
			t.Errorf("step %d: get(%s) during an outage found nothing, want the entry", i, s.key)
		}
	}
}

// BenchmarkLocalPut measures an L1 write, with its check that no
// invalidation of the key came since its read began, on many distinct keys
// in parallel. BenchmarkLocalGet is a healthy read of a trusted entry.
func BenchmarkLocalPut(b *testing.B) {
	l, vkeys := benchLocal(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			i = (i + 1) % len(vkeys)
			l.Put(vkeys[i], i, false, time.Time{}, l.Epoch())
		}
	})
}

func BenchmarkLocalGet(b *testing.B) {
	l, vkeys := benchLocal(b)
	for i, k := range vkeys {
		l.Put(k, i, false, time.Time{}, l.Epoch())
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			i = (i + 1) % len(vkeys)
			if _, _, ok := l.Get(vkeys[i], true); !ok {
				b.Errorf("get(%s) found nothing", vkeys[i])
				return
			}
		}
	})
}

// benchLocal returns a subscribed L1 of 10,000 entries and as many value
// keys.
func benchLocal(b *testing.B) (*Cache[int], []string) {
	l, err := New[int](10_000, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	l.Lease(time.Now().Add(time.Hour)) // no backplane here: its lease never ends
	b.Cleanup(l.Close)
	l.VerifyFromNow()
	vkeys := make([]string, 10_000)
	for i := range vkeys {
		vkeys[i] = "ca:{" + strconv.Itoa(i) + "}"
	}
	return l, vkeys
}

// TestPutNeverShowsAnInvalidatedRead: a Get that starts after an
// invalidation was applied never finds an older value in L1, not even for
// the instant between a write and a check. The test looks inside Put
// through otter's OnDeletion, which runs on the goroutine of a write that
// replaces an entry: a read-first Get of this process running there.
func TestPutNeverShowsAnInvalidatedRead(t *testing.T) {
	l, err := New[int](100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l.Lease(time.Now().Add(time.Hour)) // no backplane here: its lease never ends
	var (
		seen  []int
		probe bool
	)
	l.c.StopAllGoroutines()
	l.c, err = otter.New(&otter.Options[string, *entry[int]]{
		MaximumSize: 100,
		Executor:    func(fn func()) { fn() },
		OnDeletion: func(e otter.DeletionEvent[string, *entry[int]]) {
			if probe && e.Cause == otter.CauseReplacement {
				// A Get that starts now, long after the invalidation.
				if v, _, ok := l.Get("k", true); ok {
					seen = append(seen, *v)
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	l.VerifyFromNow()

	began := l.Epoch()                           // a read of k begins: it will return 1
	l.Invalidate("k")                            // k changes to 2 and the invalidation is applied
	l.Put("k", 2, false, time.Time{}, l.Epoch()) // a later read puts 2
	probe = true
	l.Put("k", 1, false, time.Time{}, began) // the first read's answer arrives
	probe = false
	for _, v := range seen {
		if v == 1 {
			t.Errorf("a read-first Get after the invalidation of k was applied found 1 in L1, read before it (during the put of that read)")
		}
	}
	if v, _, ok := l.Get("k", true); ok && *v == 1 {
		t.Errorf("Get(k) = 1 after the put, want 2 or nothing")
	}
}

// deref is *v, or 0 for a Get that found nothing.
func deref(v *int) int {
	if v == nil {
		return 0
	}
	return *v
}

// TestLocalTrustsOnlyWhileLeased: healthy reads trust the L1 only until
// the subscription's lease ends, and not after a drop until a new lease;
// a read during an outage takes the entry either way.
func TestLocalTrustsOnlyWhileLeased(t *testing.T) {
	l, err := New[int](100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.VerifyFromNow()
	l.Put("k", 1, false, time.Time{}, l.Epoch())
	check := func(step string, healthy bool) {
		t.Helper()
		if _, _, ok := l.Get("k", true); ok != healthy {
			t.Errorf("%s: healthy Get(k) found it = %v, want %v", step, ok, healthy)
		}
		if _, _, ok := l.Get("k", false); !ok {
			t.Errorf("%s: Get(k) during an outage found nothing, want the entry", step)
		}
	}
	check("never leased", false)
	l.Lease(time.Now().Add(50 * time.Millisecond))
	check("leased", true)
	time.Sleep(60 * time.Millisecond)
	check("lease ended", false)
	l.Lease(time.Now().Add(time.Hour))
	check("leased again", true)
	l.Lease(time.Now()) // an earlier end does not shorten it
	check("an earlier lease", true)
	l.Unverify()
	l.Resume()
	check("resumed after a drop, not leased", false)
	l.Lease(time.Now().Add(time.Hour))
	check("resumed and leased", true)
}

// TestGetSinceTakesOnlyEntriesWrittenAfterTheStamp: GetSince answers with
// the entry of a key only if a Put wrote it after the stamp was taken;
// the entry of the stamp itself, a Refresh that left it in place and a
// key dropped since are no answer.
func TestGetSinceTakesOnlyEntriesWrittenAfterTheStamp(t *testing.T) {
	tests := []struct {
		name   string
		before func(l *Cache[int]) // before the stamp
		after  func(l *Cache[int]) // after it
		want   bool
	}{
		{"none, then put", func(l *Cache[int]) {}, func(l *Cache[int]) { l.Put("k", 2, false, time.Time{}, l.Epoch()) }, true},
		{"an entry, untouched", func(l *Cache[int]) { l.Put("k", 1, false, time.Time{}, l.Epoch()) }, func(l *Cache[int]) {}, false},
		{"an entry, put again", func(l *Cache[int]) { l.Put("k", 1, false, time.Time{}, l.Epoch()) }, func(l *Cache[int]) { l.Put("k", 1, false, time.Time{}, l.Epoch()) }, true},
		{"an entry, refreshed in place", func(l *Cache[int]) { l.Put("k", 1, false, time.Time{}, l.Epoch()) }, func(l *Cache[int]) { l.Refresh("k", 1, false, time.Time{}, l.Epoch()) }, false},
		{"an entry, invalidated", func(l *Cache[int]) { l.Put("k", 1, false, time.Time{}, l.Epoch()) }, func(l *Cache[int]) { l.Invalidate("k") }, false},
		{"none, another key put", func(l *Cache[int]) {}, func(l *Cache[int]) { l.Put("other", 2, false, time.Time{}, l.Epoch()) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestLocal(t)
			l.VerifyFromNow() // a Refresh leaves a trusted, fresh entry in place
			tt.before(l)
			s := l.Stamp("k")
			tt.after(l)
			if _, _, ok := l.GetSince("k", s); ok != tt.want {
				t.Errorf("GetSince(k) ok = %v, want %v", ok, tt.want)
			}
		})
	}
}
