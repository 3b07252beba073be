package cacheaside_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// Clear and InvalidateTag on a real Redis Cluster (clearcluster.go): two
// processes, each with its own ClusterClient, over keys on every primary.

// clusterKeys returns 30 keys and fails the test unless they are spread
// over the cluster's three primaries.
func clusterKeys(t *testing.T, cl *redistest.Cluster) []string {
	t.Helper()
	keys := make([]string, 30)
	primaries := map[string]bool{}
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		primaries[cl.PrimaryFor(keys[i]).Addr()] = true
	}
	if len(primaries) != 3 {
		t.Fatalf("30 keys are on %d primaries, want all 3", len(primaries))
	}
	return keys
}

// parity tags even keys "even" and odd keys "odd".
func parity(key string) []string {
	n, _ := strconv.Atoi(key[1:])
	if n%2 == 0 {
		return []string{"even"}
	}
	return []string{"odd"}
}

// TestClusterClearAndTags: on a Cluster, a's Clear and InvalidateTag make
// b (another process) reload what they invalidate, on every node, through
// Get and GetMany, and only that; and a load in flight during either is
// not served afterwards.
func TestClusterClearAndTags(t *testing.T) {
	cl := redistest.StartCluster(t)
	keys := clusterKeys(t, cl)
	pair := func(t *testing.T, db *versionDB, prefix string) (a, b *cacheaside.Cache[string, string]) {
		batch := func(ctx context.Context, keys []string) (map[string]string, error) {
			cacheaside.Tag(ctx, parity(keys[0])...) // GetMany is called with keys of one parity
			return db.loadMany(ctx, keys)
		}
		opts := []cacheaside.Option{cacheaside.WithPrefix(prefix), cacheaside.WithBatchLoader(batch)}
		load := db.tagged(parity)
		return newCacheOn(t, cl.Client(t), load, opts...), newCacheOn(t, cl.Client(t), load, opts...)
	}
	t.Run("Clear", func(t *testing.T) {
		db := newVersionDB()
		a, b := pair(t, db, "clear:")
		ctx := testContext(t)
		for _, k := range keys {
			mustGetValue(t, a, k, k+"=v1", "warm a")
			mustGetValue(t, b, k, k+"=v1", "warm b")
		}
		db.set("v2")
		if err := a.Clear(ctx); err != nil {
			t.Fatalf("Clear() = %v, want nil", err)
		}
		for _, k := range keys {
			mustGetValue(t, b, k, k+"=v2", "b after a's Clear")
		}
		for _, k := range keys {
			db.mustStayCached(t, a, k, k+"=v2")
		}
	})
	t.Run("InvalidateTag", func(t *testing.T) {
		db := newVersionDB()
		a, b := pair(t, db, "tag:")
		ctx := testContext(t)
		for _, k := range keys {
			mustGetValue(t, a, k, k+"=v1", "warm a")
		}
		db.set("v2")
		if err := a.InvalidateTag(ctx, "even"); err != nil {
			t.Fatalf("InvalidateTag() = %v, want nil", err)
		}
		for _, k := range keys {
			want := k + "=v1"
			if parity(k)[0] == "even" {
				want = k + "=v2"
			}
			mustGetValue(t, b, k, want, "b after a's InvalidateTag(even)")
		}
		if n := db.loads.Load(); n != int64(len(keys)+len(keys)/2) {
			t.Errorf("loads = %d, want %d (each key once, then the even ones again)", n, len(keys)+len(keys)/2)
		}
	})
	t.Run("GetMany", func(t *testing.T) {
		db := newVersionDB()
		a, b := pair(t, db, "many:")
		ctx := testContext(t)
		var odd, even []string
		for _, k := range keys {
			if parity(k)[0] == "odd" {
				odd = append(odd, k)
			} else {
				even = append(even, k)
			}
		}
		for _, ks := range [][]string{odd, even} {
			if _, err := b.GetMany(ctx, ks); err != nil {
				t.Fatalf("GetMany: %v", err)
			}
		}
		db.set("v2")
		if err := a.InvalidateTag(ctx, "odd"); err != nil {
			t.Fatalf("InvalidateTag() = %v, want nil", err)
		}
		got, err := b.GetMany(ctx, keys)
		if err != nil {
			t.Fatalf("GetMany after InvalidateTag: %v", err)
		}
		for _, k := range keys {
			want := k + "=v1"
			if parity(k)[0] == "odd" {
				want = k + "=v2"
			}
			if got[k] != want {
				t.Errorf("GetMany after InvalidateTag(odd) [%q] = %q, want %q", k, got[k], want)
			}
		}
		db.set("v3")
		if err := a.Clear(ctx); err != nil {
			t.Fatalf("Clear() = %v, want nil", err)
		}
		if got, err = b.GetMany(ctx, keys); err != nil {
			t.Fatalf("GetMany after Clear: %v", err)
		}
		for _, k := range keys {
			if got[k] != k+"=v3" {
				t.Errorf("GetMany after Clear [%q] = %q, want %q", k, got[k], k+"=v3")
			}
		}
	})
	for _, what := range []string{"Clear", "InvalidateTag"} {
		t.Run(what+"DuringLoad", func(t *testing.T) {
			db := newRow(t, "old")
			load := func(ctx context.Context, key string) (string, error) {
				cacheaside.Tag(ctx, "t")
				return db.load(ctx, key)
			}
			opts := cacheaside.WithPrefix("load" + what + ":")
			a, b := newCacheOn(t, cl.Client(t), load, opts), newCacheOn(t, cl.Client(t), load, opts)
			ctx := testContext(t)
			invalidate := func(c *cacheaside.Cache[string, string]) error {
				if what == "Clear" {
					return c.Clear(ctx)
				}
				return c.InvalidateTag(ctx, "t")
			}
			if err := invalidate(b); err != nil { // so that a knows the clock
				t.Fatalf("first %s() = %v", what, err)
			}
			first := getAsync(ctx, a, "k")
			<-db.entered
			db.update("new")
			if err := invalidate(b); err != nil {
				t.Fatalf("%s() = %v, want nil", what, err)
			}
			db.letGo()
			if o := await(t, first, "the Get that started the load"); o.err != nil {
				t.Fatalf("first Get: %v", o.err)
			}
			mustGetValue(t, b, "k", "new", "b after "+what)
			mustGetValue(t, a, "k", "new", "a after "+what)
		})
	}
}

// TestClusterClearHitPathOneRoundTripPerNode: after a Clear and an
// InvalidateTag, a warm Get sends one command to the node of its key and
// nothing to any other, and a warm GetMany of keys on every primary sends
// one pipeline per primary: the reads carry each node's clock replica, not
// the clock's own slot.
func TestClusterClearHitPathOneRoundTripPerNode(t *testing.T) {
	cl := redistest.StartCluster(t)
	keys := clusterKeys(t, cl)
	rdb, counts := countingClusterClient(t, cl)
	db := newVersionDB()
	c := newCacheOn(t, rdb, db.tagged(parity), cacheaside.WithBatchLoader(db.loadMany))
	ctx := testContext(t)
	if err := c.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	if err := c.InvalidateTag(ctx, "even"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	for round := range 2 { // cold, then warm (and the tags' versions read)
		if _, err := c.GetMany(ctx, keys); err != nil {
			t.Fatalf("round %d: GetMany: %v", round, err)
		}
	}
	loads := db.loads.Load()
	for _, k := range keys {
		owner := cl.PrimaryFor(k).Addr()
		before := counts()
		mustGetValue(t, c, k, k+"=v1", "warm Get")
		after := counts()
		for addr, n := range after {
			want := int64(0)
			if addr == owner {
				want = 1
			}
			if n-before[addr] != want {
				t.Errorf("warm Get(%q): node %s received %d commands or pipelines, want %d (owner %s)", k, addr, n-before[addr], want, owner)
			}
		}
	}
	before := counts()
	got, err := c.GetMany(ctx, keys)
	if err != nil || len(got) != len(keys) {
		t.Fatalf("warm GetMany = %d values, %v", len(got), err)
	}
	after := counts()
	for addr, n := range after {
		want := int64(0)
		for _, k := range keys {
			if cl.PrimaryFor(k).Addr() == addr {
				want = 1
				break
			}
		}
		if n-before[addr] != want {
			t.Errorf("warm GetMany: node %s received %d commands or pipelines, want %d", addr, n-before[addr], want)
		}
	}
	if n := db.loads.Load(); n != loads {
		t.Errorf("loads during warm reads = %d, want 0", n-loads)
	}
}

// TestClusterClearNodeDown: a Clear that cannot raise the replicas of a
// dead primary fails with ErrRedisUnavailable, although the clock key's
// node took it, and the process serves no Redis copy of the prefix until
// a Clear succeeds, after the cluster promoted the dead node's replica.
func TestClusterClearNodeDown(t *testing.T) {
	cl := redistest.StartCluster(t)
	keys := clusterKeys(t, cl)
	db := newVersionDB()
	a, b := newCacheOn(t, cl.Client(t), db.load), newCacheOn(t, cl.Client(t), db.load)
	ctx := testContext(t)
	for _, k := range keys {
		mustGetValue(t, a, k, k+"=v1", "warm a")
	}
	clockNode := cl.PrimaryFor("tags").Addr()
	var victim, live string
	for _, k := range keys {
		switch addr := cl.PrimaryFor(k).Addr(); {
		case addr != clockNode && victim == "":
			victim = k
		case addr == clockNode && live == "":
			live = k
		}
	}
	cl.KillPrimaryFor(victim)
	db.set("v2")
	if err := a.Clear(ctx); !errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Fatalf("Clear() with a primary down = %v, want ErrRedisUnavailable", err)
	}
	mustGetValue(t, a, live, live+"=v2", "a after its failed Clear, key on a live node")
	cl.WaitOK()
	var err error
	for range 50 { // the slot map of a's client catches up with the promotion
		if err = a.Clear(ctx); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Clear() after the failover = %v, want nil", err)
	}
	for _, k := range keys {
		mustGetValue(t, b, k, k+"=v2", "b after a's Clear")
	}
}
