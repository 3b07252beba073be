package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
)

// Helpers of the tests of the replay of invalidations that could not
// reach Redis (replay_test.go here and in the integration module, which
// links this file).

// versionedDB is a database whose rows all change version together.
type versionedDB struct {
	version atomic.Int64
	loads   atomic.Int64
}

func newVersionedDB() *versionedDB {
	db := &versionedDB{}
	db.version.Store(1)
	return db
}

func (db *versionedDB) load(_ context.Context, k int) (string, error) {
	db.loads.Add(1)
	return db.value(k), nil
}

// value is the current row of k.
func (db *versionedDB) value(k int) string {
	return "row" + strconv.Itoa(k) + "-v" + strconv.FormatInt(db.version.Load(), 10)
}

// checkQueuedErr fails the test unless err says the change was queued
// because Redis was unavailable.
func checkQueuedErr(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, cacheaside.ErrRedisUnavailable) || !errors.Is(err, cacheaside.ErrQueued) {
		t.Errorf("%s with Redis down = %v, want an error matching ErrRedisUnavailable and ErrQueued", what, err)
	}
}

// changeDuringFault is how a replay test changes the row of key 1 while
// Redis is down: with Invalidate or with Set.
type changeDuringFault struct {
	name   string
	change func(ctx context.Context, c *cacheaside.Cache[int, string], db *versionedDB) error
}

var faultChanges = []changeDuringFault{
	{"Invalidate", func(ctx context.Context, c *cacheaside.Cache[int, string], db *versionedDB) error {
		return c.Invalidate(ctx, 1)
	}},
	{"Set", func(ctx context.Context, c *cacheaside.Cache[int, string], db *versionedDB) error {
		return c.Set(ctx, 1, db.value(1))
	}},
}

// checkChangeSurvivesFault caches key 1 on two instances a and b (Caches
// on clients of their own, as two processes have, on db), breaks Redis
// for a with fault, changes the row and calls ch.change on a (which must
// fail, queued), heals Redis with heal, and then checks that a's first
// Get after the heal and every Get on b started a second after a's replay
// return the new row.
func checkChangeSurvivesFault(t *testing.T, a, b *cacheaside.Cache[int, string], db *versionedDB, ch changeDuringFault, fault, heal func()) {
	t.Helper()
	mustGetValue(t, a, 1, db.value(1), "A before the fault")
	mustGetValue(t, b, 1, db.value(1), "B before the fault")

	fault()
	db.version.Add(1)
	checkQueuedErr(t, ch.name, ch.change(testContext(t), a, db))
	heal()
	mustGetValue(t, a, 1, db.value(1), "A's first Get after the heal")
	// The replay waits for A's breaker to close, which may take a few
	// cooldowns when the first calls to the healed Redis run out the
	// 200ms Redis timeout on a loaded machine (seen at a load average of
	// 20: still pending 1.4s after the heal, the breaker half-open). A
	// change that is lost is never replayed, and B serves the old row
	// until the TTL.
	waitFor(t, waitLimit, "A replays the queued change", func() bool { return a.Stats().InvalidationsPending == 0 })
	checkNewRowAfterHeal(t, b, db, time.Now())
	if s := a.Stats(); s.InvalidationsReplayed == 0 || s.InvalidationsPending != 0 {
		t.Errorf("A's Stats() = %+v, want InvalidationsReplayed > 0, InvalidationsPending 0", s)
	}
}

// checkNewRowAfterHeal checks that every Get of key 1 on b started a
// second after healed returns db's current row.
func checkNewRowAfterHeal(t *testing.T, b *cacheaside.Cache[int, string], db *versionedDB, healed time.Time) {
	t.Helper()
	time.Sleep(time.Until(healed.Add(time.Second)))
	for i := range 20 {
		mustGetValue(t, b, 1, db.value(1), fmt.Sprintf("B's Get %d, a second after the heal", i))
		time.Sleep(10 * time.Millisecond)
	}
}
