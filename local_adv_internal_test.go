package cacheaside

import (
	"testing"
	"time"

	"github.com/maypok86/otter/v2"
)

// TestLocalPutNeverShowsAnInvalidatedRead: "a Get that starts after an
// invalidation was applied never finds an older value in L1" (local's
// comment). put writes the entry and only then checks the key's stripe,
// so between the two an entry whose read began before an invalidation
// that was applied in full is visible to any Get. The test looks in that
// gap through otter's OnDeletion, which runs on the goroutine of a Set
// that replaces an entry: a read-first Get of this process running there.
func TestLocalPutNeverShowsAnInvalidatedRead(t *testing.T) {
	l, err := newLocal[int](100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var (
		seen  []int
		probe bool
	)
	l.c.StopAllGoroutines()
	l.c, err = otter.New(&otter.Options[string, localEntry[int]]{
		MaximumSize: 100,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, localEntry[int]]) time.Duration {
			return time.Duration(e.Value.expires - time.Now().UnixNano())
		}),
		Executor: func(fn func()) { fn() },
		OnDeletion: func(e otter.DeletionEvent[string, localEntry[int]]) {
			if probe && e.Cause == otter.CauseReplacement {
				// A Get that starts now, long after the invalidation.
				if r, ok := l.get("k", true); ok {
					seen = append(seen, r.val)
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	l.verifyFromNow()

	began := l.epoch.Load()                                      // a read of k begins: it will return 1
	l.invalidate("k")                                            // k changes to 2 and the invalidation is applied
	l.put("k", result[int]{val: 2}, time.Time{}, l.epoch.Load()) // a later read puts 2
	probe = true
	l.put("k", result[int]{val: 1}, time.Time{}, began) // the first read's answer arrives
	probe = false
	for _, v := range seen {
		if v == 1 {
			t.Errorf("a read-first Get after the invalidation of k was applied found 1 in L1, read before it (during the put of that read)")
		}
	}
	if r, ok := l.get("k", true); ok && r.val == 1 {
		t.Errorf("get(k) = 1 after the put, want 2 or nothing")
	}
}
