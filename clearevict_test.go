package cacheaside_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// evictKeeping writes filler keys to srv, a server with a small
// maxmemory under allkeys-lru, touching the keys of keep between writes,
// until Redis has evicted gone. It fails the test if keep lost a key or
// gone survives a bound of writes. Redis keeps idle times in seconds, so
// a test that runs in less than one would see every key equally idle and
// LRU would evict at random: gone and the fillers are written with an
// idle time of days (RESTORE ... IDLETIME), as a key untouched for long
// is, and keep stays the most recently used.
func evictKeeping(t *testing.T, rdb *redis.Client, gone string, keep ...string) {
	t.Helper()
	ctx := testContext(t)
	const idle = 1_000_000 // seconds
	aged, err := rdb.Dump(ctx, gone).Result()
	if err != nil {
		t.Fatalf("DUMP %s: %v", gone, err)
	}
	if err := rdb.Do(ctx, "RESTORE", gone, 0, aged, "REPLACE", "IDLETIME", idle).Err(); err != nil {
		t.Fatalf("RESTORE %s IDLETIME: %v", gone, err)
	}
	if err := rdb.Set(ctx, "filler:proto", strings.Repeat("x", 2048), 0).Err(); err != nil {
		t.Fatalf("SET filler: %v", err)
	}
	filler, err := rdb.Dump(ctx, "filler:proto").Result()
	if err != nil {
		t.Fatalf("DUMP filler: %v", err)
	}
	for i := range 200_000 {
		if i%16 == 0 {
			n, err := rdb.Exists(ctx, gone).Result()
			if err != nil {
				t.Fatalf("EXISTS %s: %v", gone, err)
			}
			if n == 0 {
				break
			}
			for _, k := range keep {
				if err := rdb.Get(ctx, k).Err(); err != nil {
					t.Fatalf("GET %s while evicting = %v: evicted before %s", k, err, gone)
				}
			}
		}
		err := rdb.Do(ctx, "RESTORE", fmt.Sprintf("filler:%d", i), 0, filler, "IDLETIME", idle).Err()
		if err != nil {
			t.Fatalf("RESTORE filler: %v", err)
		}
	}
	if n, _ := rdb.Exists(ctx, gone).Result(); n != 0 {
		t.Fatalf("%s not evicted after 200,000 filler writes", gone)
	}
}

// startLRU starts a redis-server that evicts any key under memory
// pressure, as caches are commonly configured.
func startLRU(t *testing.T) *redistest.Server {
	return redistest.Start(t, "--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "10")
}

// TestInvalidateTagSurvivesTagKeyEviction: a tag's key evicted under
// allkeys-lru must not make the values invalidated through it current
// again. The value key and the clock key are hot (read with every Get),
// the tag key is read once per clock value: it is the one LRU evicts.
func TestInvalidateTagSurvivesTagKeyEviction(t *testing.T) {
	srv := startLRU(t)
	db := newVersionDB()
	a := newCache(t, srv, db.tagged(category))
	ctx := testContext(t)
	mustGetValue(t, a, "p1", "p1=v1", "warm")
	db.set("v2")
	if err := a.InvalidateTag(ctx, "cat:a"); err != nil {
		t.Fatalf("InvalidateTag() = %v, want nil", err)
	}
	evictKeeping(t, srv.Client(t), "ca:{tags}:t:cat:a", "ca:{p1}", "ca:{tags}:clock")
	// A process started now (or one whose versions are read again after
	// the clock moves) must not serve the value loaded before the call.
	b := newCache(t, srv, db.tagged(category))
	mustGetValue(t, b, "p1", "p1=v2", "new process after the tag key's eviction")
	if err := a.InvalidateTag(ctx, "unrelated"); err != nil {
		t.Fatalf("InvalidateTag(unrelated) = %v, want nil", err)
	}
	mustGetValue(t, a, "p1", "p1=v2", "after the clock moved")
}
