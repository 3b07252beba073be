package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestClockRestoredOlderIsCaught: the clock key set back to an older
// value (a restart from an older snapshot, a failover to a lagging
// replica) loses the Clear made since. A process that knew the newer
// clock reads the older one and treats it as lost: it moves the clock
// past the one it knew, with the last Clear there, so that a new process
// does not serve a value loaded before the lost Clear.
func TestClockRestoredOlderIsCaught(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	ctx := testContext(t)
	rdb := srv.Client(t)
	mustGetValue(t, a, "k", "k=v1", "warm")
	mustGetValue(t, a, "k2", "k2=v1", "warm")
	older, err := rdb.Get(ctx, "ca:{tags}:clock").Result()
	if err != nil {
		t.Fatalf("GET clock key: %v", err)
	}
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	mustGetValue(t, a, "k", "k=v2", "after Clear")
	if err := rdb.Set(ctx, "ca:{tags}:clock", older, 0).Err(); err != nil {
		t.Fatal(err)
	}
	mustGetValue(t, a, "k", "k=v2", "clearing process after the clock key went back")
	b := newCache(t, srv, db.load)
	mustGetValue(t, b, "k2", "k2=v2", "new process after the clock key went back")
	mustGetValue(t, b, "k", "k=v2", "new process after the clock key went back")
}
