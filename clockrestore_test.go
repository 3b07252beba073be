package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// warmOneProcess starts a server and one process that has loaded keys
// (each "<key>=v1").
func warmOneProcess(t *testing.T, keys ...string) (*redistest.Server, *versionDB, *cacheaside.Cache[string, string], *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	for _, k := range keys {
		mustGetValue(t, a, k, k+"=v1", "warm")
	}
	return srv, db, a, srv.Client(t)
}

// TestClockRestoredOlderIsCaught: the clock key set back to an older
// value (a restart from an older snapshot, a failover to a lagging
// replica) loses the Clear made since. A process that knew the newer
// clock reads the older one and treats it as lost: it moves the clock
// past the one it knew, with the last Clear there, so that a new process
// does not serve a value loaded before the lost Clear.
func TestClockRestoredOlderIsCaught(t *testing.T) {
	srv, db, a, rdb := warmOneProcess(t, "k", "k2")
	ctx := testContext(t)
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

// TestClockKeyOfAnotherTypeIsReplaced: a clock key of another Redis type
// (another program's data) is replaced, as a lost one is recreated: the
// values stored before reload once, with no Redis error and no failing
// script at every read.
func TestClockKeyOfAnotherTypeIsReplaced(t *testing.T) {
	srv, db, a, rdb := warmOneProcess(t, "k")
	ctx := testContext(t)
	if err := rdb.Del(ctx, "ca:{tags}:clock").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "ca:{tags}:clock", "f", "x").Err(); err != nil {
		t.Fatal(err)
	}
	b := newCache(t, srv, db.load)
	before := db.loads.Load()
	for range 20 {
		mustGetValue(t, b, "k", "k=v1", "new process, clock key of another type")
		mustGetValue(t, a, "k", "k=v1", "old process, clock key of another type")
	}
	if n := db.loads.Load() - before; n > 2 {
		t.Errorf("loads of 40 Gets after the clock key changed type = %d, want at most 2 (one reload)", n)
	}
	if ea, eb := a.Stats().RedisErrors, b.Stats().RedisErrors; ea+eb != 0 {
		t.Errorf("Stats().RedisErrors = %d and %d, want 0 (a key of another type is no Redis failure)", ea, eb)
	}
	if typ := rdb.Type(ctx, "ca:{tags}:clock").Val(); typ != "string" {
		t.Errorf("TYPE clock key = %s, want string (replaced)", typ)
	}
}

// TestEmptyClockKeyIsCorrupt: a clock key that holds an empty string
// (which the hit path's MGET reads as missing: guard.MGetNode) is no
// clock. Gets still answer, from the loader, without a Redis error, the
// process counts it in Stats.Corrupt, and it is left as it is for a
// Clear to replace, as any string that is no clock (tagclock.Ensure).
func TestEmptyClockKeyIsCorrupt(t *testing.T) {
	srv, db, a, rdb := warmOneProcess(t, "k")
	ctx := testContext(t)
	if err := rdb.Set(ctx, "ca:{tags}:clock", "", 0).Err(); err != nil {
		t.Fatal(err)
	}
	b := newCache(t, srv, db.load)
	for range 10 {
		mustGetValue(t, b, "k", "k=v1", "new process, empty clock key")
		mustGetValue(t, a, "k", "k=v1", "old process, empty clock key")
	}
	for name, c := range map[string]*cacheaside.Cache[string, string]{"old": a, "new": b} {
		if s := c.Stats(); s.Corrupt == 0 || s.RedisErrors != 0 {
			t.Errorf("%s process: Stats() Corrupt = %d, RedisErrors = %d; want Corrupt > 0 and no Redis errors", name, s.Corrupt, s.RedisErrors)
		}
	}
	if v, err := rdb.Get(ctx, "ca:{tags}:clock").Result(); err != nil || v != "" {
		t.Errorf("GET clock key = %q, %v; want it left empty", v, err)
	}
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil (it replaces a clock key that is no clock)", err)
	}
}
