package cacheaside_test

import (
	"context"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestL1ResumesAfterDroppedSubscription: A's subscription drops and B
// invalidates k while A cannot subscribe again, so that A misses the
// message. Once A subscribes again it reads what it missed from the
// invalidation stream: k's old value is gone from its L1, and the rest of
// its L1 (k2) is trusted again at once, a local hit without a Redis read.
// Before the stream, A distrusted its whole L1 after every drop.
func TestL1ResumesAfterDroppedSubscription(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	a, gate := gatedCache(t, srv, load)
	b := newCache(t, srv, load, localFirst...)
	waitListening(t, srv, b, a, "probe")
	mustGetValue(t, a, "k", 1, "A fills its L1")
	mustGetValue(t, a, "k2", 1, "A fills its L1")
	before := a.Stats()
	mustGetValue(t, a, "k2", 1, "A's L1")
	if st := a.Stats(); st.LocalHits != before.LocalHits+1 {
		t.Fatalf("A's Get(k2) before the drop was not a local hit: %+v", st)
	}

	dropSubscription(t, srv, gate)
	version.Store(2)
	if err := b.Invalidate(context.Background(), "k"); err != nil {
		t.Fatalf("B.Invalidate(k) = %v", err)
	}
	invalidations := a.Stats().LocalInvalidations
	gate.shut.Store(false)
	waitFor(t, 10*time.Second, "A resumes its L1", func() bool { return a.Stats().LocalResumes == 1 })

	st := a.Stats()
	if st.LocalInvalidations != invalidations+1 {
		t.Errorf("A applied %d invalidations on resuming, want 1 (B's, read from the stream)", st.LocalInvalidations-invalidations)
	}
	mustGetValue(t, a, "k2", 1, "A, right after it resumed")
	if after := a.Stats(); after.LocalHits != st.LocalHits+1 || after.Hits != st.Hits {
		t.Errorf("A's first Get(k2) after resuming: LocalHits %d -> %d, Hits %d -> %d; want a local hit, no Redis read",
			st.LocalHits, after.LocalHits, st.Hits, after.Hits)
	}
	mustGetValue(t, a, "k", 2, "A, after it resumed (the invalidation it missed)")
}
