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

// tagged returns db's loader that tags each key's value with tagsOf(key).
func (d *versionDB) tagged(tagsOf func(key string) []string) cacheaside.LoadFunc[string, string] {
	return func(ctx context.Context, key string) (string, error) {
		cacheaside.Tag(ctx, tagsOf(key)...)
		return d.load(ctx, key)
	}
}

// category tags p1 and p2 "cat:a", everything else "cat:b".
func category(key string) []string {
	if key == "p1" || key == "p2" {
		return []string{"cat:a", "shop"}
	}
	return []string{"cat:b", "shop"}
}

// TestInvalidateTagAcrossInstances: a's InvalidateTag makes b reload the
// values carrying the tag, and only those.
func TestInvalidateTagAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a, b := newCache(t, srv, db.tagged(category)), newCache(t, srv, db.tagged(category))
	ctx := testContext(t)
	for _, k := range []string{"p1", "p2", "p3"} {
		mustGetValue(t, a, k, k+"=v1", "warm a")
		mustGetValue(t, b, k, k+"=v1", "warm b")
	}
	db.set("v2")
	if err := a.InvalidateTag(ctx, "cat:a"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	mustGetValue(t, b, "p1", "p1=v2", "b after a's InvalidateTag")
	mustGetValue(t, a, "p2", "p2=v2", "a after its InvalidateTag")
	mustGetValue(t, b, "p3", "p3=v1", "untouched tag")
	db.mustStayCached(t, b, "p1", "p1=v2")
	db.mustStayCached(t, a, "p3", "p3=v1")
	// A tag both carry invalidates all of them.
	if err := b.InvalidateTag(ctx, "shop", "unused"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	mustGetValue(t, a, "p3", "p3=v2", "after InvalidateTag of a shared tag")
}

// TestInvalidateTagSteadyStateCost: after an InvalidateTag, the values
// loaded before it whose tags it did not name keep hitting, and their
// tags' versions are read once, not once per Get.
func TestInvalidateTagSteadyStateCost(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	c := newCache(t, srv, db.tagged(category))
	ctx := testContext(t)
	keys := []string{"p3", "p4", "p5", "p6", "p7", "p8"}
	for _, k := range keys {
		mustGetValue(t, c, k, k+"=v1", "warm")
	}
	other := newCache(t, srv, db.tagged(category))
	if err := other.InvalidateTag(ctx, "cat:a"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	loads := db.loads.Load()
	srv.CLI(t, "CONFIG", "RESETSTAT")
	const rounds = 5
	for range rounds {
		for _, k := range keys {
			mustGetValue(t, c, k, k+"=v1", "after an InvalidateTag of another tag")
		}
	}
	if n := db.loads.Load() - loads; n != 0 {
		t.Errorf("loads = %d, want 0", n)
	}
	// One read per Get, plus the versions: a few MGETs at most (reads
	// racing the first fetch), never one per Get.
	if n, want := redisReads(t, srv), int64(rounds*len(keys)); n < want || n > want+4 {
		t.Errorf("%d Gets sent %d reads, want between %d and %d", want, n, want, want+4)
	}
}

// TestInvalidateTagGetMany: GetMany honours tags, a batch loader's Tag
// tagging every value of its batch.
func TestInvalidateTagGetMany(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	batch := func(ctx context.Context, keys []string) (map[string]string, error) {
		cacheaside.Tag(ctx, "batch")
		return db.loadMany(ctx, keys)
	}
	a := newCache(t, srv, db.tagged(category))
	b := newCache(t, srv, db.tagged(category), cacheaside.WithBatchLoader(batch))
	ctx := testContext(t)
	keys := []string{"x", "y", "z"}
	if _, err := b.GetMany(ctx, keys); err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	db.set("v2")
	if err := a.InvalidateTag(ctx, "batch"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	got, err := b.GetMany(ctx, keys)
	if err != nil {
		t.Fatalf("GetMany after InvalidateTag: %v", err)
	}
	for _, k := range keys {
		if got[k] != k+"=v2" {
			t.Errorf("GetMany after InvalidateTag [%q] = %q, want %q", k, got[k], k+"=v2")
		}
	}
	db.mustStayCached(t, a, "x", "x=v2")
}

// TestInvalidateTagDuringLoadDoesNotWrite: a load that read the row
// before an InvalidateTag of its tag (from its own process or another)
// writes nothing, and a Get afterwards returns the new value.
func TestInvalidateTagDuringLoadDoesNotWrite(t *testing.T) {
	duringLoadDoesNotWrite(t, "InvalidateTag", []string{"t", "u"}, func(ctx context.Context, c *cacheaside.Cache[string, string]) error {
		return c.InvalidateTag(ctx, "t")
	})
}

// TestTagBounds: a result with a bad tag is returned but not cached, and
// InvalidateTag rejects one.
func TestTagBounds(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	long := string(make([]byte, cacheaside.MaxTagLen+1))
	tooMany := make([]string, cacheaside.MaxTags+1)
	for i := range tooMany {
		tooMany[i] = string(rune('a' + i))
	}
	c := newCache(t, srv, db.tagged(func(key string) []string {
		switch key {
		case "empty":
			return []string{""}
		case "long":
			return []string{long}
		case "many":
			return tooMany
		}
		return append(tooMany[:cacheaside.MaxTags:cacheaside.MaxTags], "a") // a duplicate counts once
	}))
	for _, k := range []string{"empty", "long", "many"} {
		before := db.loads.Load()
		mustGetValue(t, c, k, k+"=v1", "bad tags")
		mustGetValue(t, c, k, k+"=v1", "bad tags again")
		if n := db.loads.Load() - before; n != 2 {
			t.Errorf("loads of %q (bad tags) = %d, want 2 (not cached)", k, n)
		}
	}
	mustGetValue(t, c, "max", "max=v1", "MaxTags tags")
	db.mustStayCached(t, c, "max", "max=v1")
	for _, bad := range []string{"", long} {
		if err := c.InvalidateTag(testContext(t), "ok", bad); !errors.Is(err, cacheaside.ErrBadTag) {
			t.Errorf("InvalidateTag(%.10q) = %v, want ErrBadTag", bad, err)
		}
	}
}

// TestInvalidateTagCorruptVersion: a tag key holding another program's
// bytes is never a panic: values carrying the tag are misses until an
// InvalidateTag rewrites it; the others still hit.
func TestInvalidateTagCorruptVersion(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	c := newCache(t, srv, db.tagged(category))
	ctx := testContext(t)
	mustGetValue(t, c, "p1", "p1=v1", "warm")
	mustGetValue(t, c, "p3", "p3=v1", "warm")
	if err := c.InvalidateTag(ctx, "other"); err != nil { // moves the clock past the values' loads
		t.Fatalf("InvalidateTag() = %v", err)
	}
	if err := srv.Client(t).Set(ctx, "ca:{tags}:t:cat:a", "junk", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db.set("v2")
	mustGetValue(t, c, "p1", "p1=v2", "tag with a corrupt version")
	mustGetValue(t, c, "p3", "p3=v1", "other tag")
	if err := c.InvalidateTag(ctx, "cat:a"); err != nil {
		t.Fatalf("InvalidateTag() over a corrupt version = %v", err)
	}
	mustGetValue(t, c, "p1", "p1=v2", "after InvalidateTag healed it")
	db.mustStayCached(t, c, "p1", "p1=v2")
}

// TestInvalidateTagRedisUnavailable: an InvalidateTag that cannot reach
// Redis fails with ErrRedisUnavailable; until one of the same tags gets
// through, its process serves no Redis copy of the prefix.
func TestInvalidateTagRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	c := newCache(t, srv, db.tagged(category), unavailableOpts...)
	ctx := testContext(t)
	mustGetValue(t, c, "p1", "p1=v1", "warm")
	db.set("v2")
	thaw := freezeServer(t, srv)
	if err := c.InvalidateTag(ctx, "cat:a"); !errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Fatalf("InvalidateTag() with Redis frozen = %v, want ErrRedisUnavailable", err)
	}
	thaw()
	mustGetValue(t, c, "p1", "p1=v2", "after the failed InvalidateTag")
	if err := c.InvalidateTag(ctx, "cat:a"); err != nil {
		t.Fatalf("InvalidateTag() after the thaw = %v, want nil", err)
	}
	mustGetValue(t, c, "p1", "p1=v2", "after it got through")
	db.mustStayCached(t, c, "p1", "p1=v2")
}

// TestTagKeysLiveAsLongAsTheirValues: a fill keeps each of its tag keys
// at least as long as the value it writes (and no longer: a tag no value
// carries has no key that outlives its values), and InvalidateTag creates
// no key for a tag no value carries, so tag keys do not accumulate for
// every tag ever used.
func TestTagKeysLiveAsLongAsTheirValues(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	c := newCache(t, srv, db.tagged(category), cacheaside.WithTTL(time.Minute), cacheaside.WithJitter(0))
	ctx := testContext(t)
	mustGetValue(t, c, "p1", "p1=v1", "fill")
	vttl, _ := strconv.Atoi(srv.CLI(t, "PTTL", c.RedisKey("p1")))
	for _, tag := range []string{"cat:a", "shop"} {
		key := "ca:{tags}:t:" + tag
		ttl, _ := strconv.Atoi(srv.CLI(t, "PTTL", key))
		if ttl <= 0 || ttl < vttl-5_000 {
			t.Errorf("PTTL %s = %d ms after a fill, want at least the value's %d ms (less a margin)", key, ttl, vttl)
		}
	}
	if err := c.InvalidateTag(ctx, "never-used"); err != nil {
		t.Fatalf("InvalidateTag(never-used) = %v", err)
	}
	if n := srv.CLI(t, "EXISTS", "ca:{tags}:t:never-used"); n != "0" {
		t.Errorf("EXISTS of a tag no value carries after InvalidateTag = %s, want 0", n)
	}
	if err := c.InvalidateTag(ctx, "cat:a"); err != nil {
		t.Fatalf("InvalidateTag(cat:a) = %v", err)
	}
	if ttl, _ := strconv.Atoi(srv.CLI(t, "PTTL", "ca:{tags}:t:cat:a")); ttl <= 0 {
		t.Errorf("PTTL of an invalidated tag key = %d, want its TTL kept", ttl)
	}
	db.set("v2")
	mustGetValue(t, c, "p1", "p1=v2", "after InvalidateTag(cat:a)")
	mustGetValue(t, c, "p3", "p3=v2", "p3 (cat:b) loaded after")
}
