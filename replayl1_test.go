package cacheaside_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestReplayedInvalidationReachesOtherL1: B keeps key 1 in a read-first
// L1. A invalidates it while Redis is frozen (queued), Redis thaws and A
// replays the invalidation. B must drop its L1 copy: every Get on B a
// second after the thaw returns the new row, not the one its L1 held.
func TestReplayedInvalidationReachesOtherL1(t *testing.T) {
	for _, ch := range faultChanges {
		t.Run(ch.name, func(t *testing.T) {
			srv := redistest.Start(t)
			db := newVersionedDB()
			a := replayCache(t, srv, db)
			b := replayCache(t, srv, db, cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true))
			waitSubscribed(t, srv, 1)
			mustGetValue(t, b, 1, db.value(1), "B fills its L1")
			mustGetValue(t, a, 1, db.value(1), "A before the fault")

			thaw := freezeServer(t, srv)
			db.version.Add(1)
			checkQueuedErr(t, ch.name, ch.change(testContext(t), a, db))
			thaw()
			healed := time.Now()
			mustGetValue(t, a, 1, db.value(1), "A's first Get after the thaw")
			waitFor(t, 10*time.Second, "A replays", func() bool { return a.Stats().InvalidationsPending == 0 })
			time.Sleep(time.Until(healed.Add(time.Second)))
			for i := range 20 {
				mustGetValue(t, b, 1, db.value(1), fmt.Sprintf("B's Get %d, a second after the thaw", i))
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
