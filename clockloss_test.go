package cacheaside_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// A lost clock key (or clock replica) means "unknown", not "never
// cleared" (clear.go, clockloss.go): a reader that finds it missing
// recreates it with its last Clear at now, so the values stored before
// are misses, once.

// TestClearSurvivesClockKeyEviction: values set, Clear, the clock key
// evicted under allkeys-lru while the value stays; another process that
// had not read the clock must not serve the value from before the Clear.
func TestClearSurvivesClockKeyEviction(t *testing.T) {
	srv := startLRU(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	ctx := testContext(t)
	mustGetValue(t, a, "p1", "p1=v1", "warm")
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	evictKeeping(t, srv.Client(t), "ca:{tags}:clock", "ca:{p1}")
	b := newCache(t, srv, db.load)
	mustGetValue(t, b, "p1", "p1=v2", "new process after the clock key's eviction")
	mustGetValue(t, a, "p1", "p1=v2", "clearing process after the clock key's eviction")
}

// TestClockKeyLossReloadsOnce: after the clock key is deleted, the values
// stored before reload once, whichever process reads them first, and are
// then current for every process (the clock is recreated once, SET NX).
func TestClockKeyLossReloadsOnce(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	ctx := testContext(t)
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"}
	for _, k := range keys {
		mustGetValue(t, a, k, k+"=v1", "warm")
	}
	if n := db.loads.Load(); n != int64(len(keys)) {
		t.Fatalf("loads after warming a fresh prefix = %d, want %d (one per key)", n, len(keys))
	}
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	for _, k := range keys {
		mustGetValue(t, a, k, k+"=v2", "after Clear")
	}
	if err := srv.Client(t).Del(ctx, "ca:{tags}:clock").Err(); err != nil {
		t.Fatal(err)
	}
	before := db.loads.Load()
	b, c := newCache(t, srv, db.load), newCache(t, srv, db.load)
	for _, k := range keys {
		mustGetValue(t, b, k, k+"=v2", "b after the clock key's loss")
		mustGetValue(t, c, k, k+"=v2", "c after the clock key's loss")
		mustGetValue(t, a, k, k+"=v2", "a after the clock key's loss")
	}
	if n := db.loads.Load() - before; n != int64(len(keys)) {
		t.Errorf("loads after the clock key's loss = %d, want %d (each key once)", n, len(keys))
	}
}

// TestInvalidateTagAfterClockLossKeepsClear: an InvalidateTag that finds
// the clock key missing must not write "never cleared": the Clear made
// before the loss still holds for a process that had not read it.
func TestInvalidateTagAfterClockLossKeepsClear(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.tagged(category))
	ctx := testContext(t)
	mustGetValue(t, a, "p1", "p1=v1", "warm")
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	if err := srv.Client(t).Del(ctx, "ca:{tags}:clock").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.InvalidateTag(ctx, "unrelated"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	b := newCache(t, srv, db.tagged(category))
	mustGetValue(t, b, "p1", "p1=v2", "new process after InvalidateTag on a lost clock")
}

// TestClusterClearSurvivesReplicaLoss: on a Cluster, the clock replicas
// lost (evicted, deleted) after a Clear must not make the values from
// before it current for a process that had not read the clock since; nor
// must the clock key and the replicas lost together.
func TestClusterClearSurvivesReplicaLoss(t *testing.T) {
	cl := redistest.StartCluster(t)
	keys := clusterKeys(t, cl)
	for _, lose := range []struct {
		name, prefix string
		clock        bool // the clock key too
	}{{"replicas", "r1:", false}, {"replicas and clock", "r2:", true}} {
		t.Run(lose.name, func(t *testing.T) {
			db := newVersionDB()
			opt := cacheaside.WithPrefix(lose.prefix)
			a := newCacheOn(t, cl.Client(t), db.load, opt)
			ctx := testContext(t)
			// b reads before the Clear (its client learns the slot map,
			// so it reads replicas) and not the clock after it.
			b := newCacheOn(t, cl.Client(t), db.load, opt)
			for _, k := range keys {
				mustGetValue(t, a, k, k+"=v1", "warm")
				mustGetValue(t, b, k, k+"=v1", "warm b")
			}
			db.set("v2")
			if err := a.Clear(ctx); err != nil {
				t.Fatalf("Clear() = %v, want nil", err)
			}
			rdb := cl.Client(t)
			gone := tagclock.ReplicaKeys(lose.prefix)
			if lose.clock {
				gone = append(gone, tagclock.Key(lose.prefix))
			}
			for _, k := range gone {
				if err := rdb.Del(ctx, k).Err(); err != nil {
					t.Fatal(err)
				}
			}
			before := db.loads.Load()
			for _, k := range keys {
				mustGetValue(t, b, k, k+"=v2", "b after the replicas' loss")
			}
			if n := db.loads.Load() - before; n != int64(len(keys)) {
				t.Errorf("loads after the loss = %d, want %d (each key once)", n, len(keys))
			}
			a.Close()
		})
	}
}

// TestLoadBeforeClockLossDoesNotWrite: a load that read the row before
// another process's Clear, whose clock key is then lost before the load
// fills, writes nothing a later read serves: its fill finds the clock
// missing, recreates it above the load's clock and is refused.
func TestLoadBeforeClockLossDoesNotWrite(t *testing.T) {
	for _, tags := range [][]string{nil, {"t"}} {
		t.Run(fmt.Sprintf("tags=%d", len(tags)), func(t *testing.T) {
			srv := redistest.Start(t)
			db := newRow(t, "old")
			load := func(ctx context.Context, key string) (string, error) {
				cacheaside.Tag(ctx, tags...)
				return db.load(ctx, key)
			}
			a, b := newCache(t, srv, load), newCache(t, srv, load)
			ctx := testContext(t)
			if err := b.Clear(ctx); err != nil { // a then knows the clock
				t.Fatalf("first Clear() = %v", err)
			}
			first := getAsync(ctx, a, "k")
			<-db.entered
			db.update("new")
			if err := b.Clear(ctx); err != nil {
				t.Fatalf("Clear() = %v, want nil", err)
			}
			if err := srv.Client(t).Del(ctx, "ca:{tags}:clock").Err(); err != nil {
				t.Fatal(err)
			}
			db.letGo()
			if o := await(t, first, "the Get that started the load"); o.err != nil {
				t.Fatalf("first Get: %v", o.err)
			}
			c := newCache(t, srv, load)
			mustGetValue(t, c, "k", "new", "a new process after the Clear and the clock's loss")
		})
	}
}

// TestFreshPrefixClockCost: the first Get of a fresh prefix creates its
// clock once (one script more than a miss costs otherwise) and loads the
// key once; another process then hits it with one MGET and no script:
// nothing reloads.
func TestFreshPrefixClockCost(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a, b := newCache(t, srv, db.load), newCache(t, srv, db.load)
	srv.CLI(t, "CONFIG", "RESETSTAT")
	mustGetValue(t, a, "k", "k=v1", "first Get of a fresh prefix")
	mget, scripts := redisCommands(t, srv, "mget"), redisCommands(t, srv, "evalsha")+redisCommands(t, srv, "eval")
	t.Logf("first Get of a fresh prefix: %d MGET, %d scripts", mget, scripts)
	if mget > 2 || scripts > 6 {
		t.Errorf("first Get of a fresh prefix sent %d MGET and %d scripts, want at most 2 (read, check before the fill) and 6 (clock, lock, fill: each EVALSHA, then EVAL on a server that has not loaded it)", mget, scripts)
	}
	srv.CLI(t, "CONFIG", "RESETSTAT")
	mustGetValue(t, b, "k", "k=v1", "another process")
	mget, scripts = redisCommands(t, srv, "mget"), redisCommands(t, srv, "evalsha")+redisCommands(t, srv, "eval")
	if mget != 1 || scripts != 0 || db.loads.Load() != 1 {
		t.Errorf("another process's first Get sent %d MGET and %d scripts and loads = %d; want 1, 0 and 1 (a hit)", mget, scripts, db.loads.Load())
	}
}
