package cacheaside

import (
	"strings"
	"testing"
	"time"
)

// The in-process cache's bookkeeping, without Redis: which writes an
// invalidation takes back, and which entries healthy reads trust. The
// races these rules close are shown end to end in local_window_test.go.

func newTestLocal(t *testing.T) *local[int] {
	t.Helper()
	l, err := newLocal[int](100, time.Minute)
	if err != nil {
		t.Fatalf("newLocal: %v", err)
	}
	t.Cleanup(l.close)
	return l
}

func TestLocalDropsPutsThatRacedAnInvalidation(t *testing.T) {
	l := newTestLocal(t)
	l.verifyFromNow()
	began := l.epoch.Load() // reads of k and other begin
	other := "other"
	for i := 0; l.stripe(other) == l.stripe("k"); i++ {
		other = "other" + strings.Repeat("+", i)
	}
	l.invalidate("k") // k changes while they are in flight

	l.put("k", result[int]{val: 1}, time.Time{}, began)
	if r, ok := l.get("k", false); ok {
		t.Errorf("get(k) = %v after a put whose read began before k's invalidation, want no entry", r.val)
	}
	l.put(other, result[int]{val: 2}, time.Time{}, began)
	if r, ok := l.get(other, true); !ok || r.val != 2 {
		t.Errorf("get(%q) = %v, %v; want 2: only k was invalidated, and %q is in another stripe", other, r.val, ok, other)
	}
	l.put("k", result[int]{val: 3}, time.Time{}, l.epoch.Load())
	if r, ok := l.get("k", true); !ok || r.val != 3 {
		t.Errorf("get(k) = %v, %v; want 3, read after the invalidation", r.val, ok)
	}
}

func TestLocalTrustsOnlyReadsUnderTheCurrentSubscription(t *testing.T) {
	l := newTestLocal(t)
	steps := []struct {
		do      func()
		key     string
		healthy bool // whether a healthy read may use key
	}{
		{func() { l.put("a", result[int]{val: 1}, time.Time{}, l.epoch.Load()) }, "a", false}, // never subscribed
		{l.verifyFromNow, "a", false}, // read before the subscription
		{func() { l.put("b", result[int]{val: 2}, time.Time{}, l.epoch.Load()) }, "b", true},
		{l.unverify, "b", false},      // the subscription dropped
		{l.verifyFromNow, "b", false}, // and came back: b may have missed an invalidation
		{func() { l.refresh("b", result[int]{val: 2}, time.Time{}, l.epoch.Load()) }, "b", true},
		{l.verifyFromNow, "b", false}, // a message nobody can read
	}
	for i, s := range steps {
		s.do()
		if _, ok := l.get(s.key, true); ok != s.healthy {
			t.Errorf("step %d: healthy get(%s) found it = %v, want %v", i, s.key, ok, s.healthy)
		}
		if _, ok := l.get(s.key, false); !ok {
			t.Errorf("step %d: get(%s) during an outage found nothing, want the entry", i, s.key)
		}
	}
}
