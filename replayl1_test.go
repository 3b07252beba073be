package cacheaside_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
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
			checkNewRowAfterHeal(t, b, db, healed)
		})
	}
}

// TestUnpublishedChangeIsReplayed: A's Set or Invalidate of key 1 is
// applied in Redis but its message cannot be published (A's user may not
// XADD to the invalidation stream, as when Redis fails between the two
// calls), so B's read-first L1 is not told. The change must be queued and
// published once A can: every Get on B a second after A's user may
// publish again returns the new row, not the one its L1 held until its
// TTL.
func TestUnpublishedChangeIsReplayed(t *testing.T) {
	for _, ch := range faultChanges {
		t.Run(ch.name, func(t *testing.T) {
			srv := redistest.Start(t)
			srv.CLI(t, "ACL", "SETUSER", "a", "on", "nopass", "~*", "&*", "+@all")
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "a", Password: "any"}) // nopass: any password; without one go-redis sends no AUTH
			t.Cleanup(func() { _ = rdb.Close() })
			db := newVersionedDB()
			a := newCacheOn(t, rdb, db.load, cacheaside.WithRedisTimeout(replayTimeout))
			b := replayCache(t, srv, db, cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true))
			waitSubscribed(t, srv, 1)
			mustGetValue(t, b, 1, db.value(1), "B fills its L1")
			mustGetValue(t, a, 1, db.value(1), "A before the fault")

			srv.CLI(t, "ACL", "SETUSER", "a", "-xadd")
			db.version.Add(1)
			err := ch.change(testContext(t), a, db)
			if !errors.Is(err, cacheaside.ErrQueued) {
				t.Errorf("%s whose message could not be published = %v, want an error matching ErrQueued", ch.name, err)
			}
			srv.CLI(t, "ACL", "SETUSER", "a", "+xadd")
			healed := time.Now()
			mustGetValue(t, a, 1, db.value(1), "A's first Get after the heal")
			checkNewRowAfterHeal(t, b, db, healed)
		})
	}
}
