package cacheaside_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The fill fence under eviction. Redis may evict any one key of a cache
// key (value, lock or generation) under memory pressure; the conditional
// fill must never accept a load that started before an Invalidate because
// of it. These tests evict a key between the start of a load (held by a
// blocking loader) and its fill (invalidatedLoad, in consistency_test.go):
// deterministically with DEL, and for real by lowering maxmemory under
// each eviction policy.

// TestEvictedGenerationFencesFill evicts the generation Invalidate wrote
// (with DEL, as eviction would) before an older load fills: the fill must
// be refused, for the lock holder (whose lock Invalidate deleted) and for
// a load that ran without the lock after its lock wait.
func TestEvictedGenerationFencesFill(t *testing.T) {
	t.Run("lock holder", func(t *testing.T) {
		srv := redistest.Start(t)
		invalidatedLoad(t, srv, func() { srv.CLI(t, "DEL", "ca:{k}:gen") })
	})
	t.Run("load without the lock", func(t *testing.T) {
		srv := redistest.Start(t)
		// Another process holds the lock and never fills: a loads by itself
		// after its lock wait.
		srv.CLI(t, "SET", "ca:{k}:lock", "token-of-a-stuck-process", "PX", "60000")
		invalidatedLoad(t, srv, func() { srv.CLI(t, "DEL", "ca:{k}:gen") }, cacheaside.WithLockWait(50*time.Millisecond))
	})
}

// TestEvictionWithoutInvalidateStillFills evicts the lock or the
// generation during a load that nothing invalidated: with DEL, and for
// real under volatile-ttl, which evicts the lock first (it has the
// shortest TTL). The fence cannot tell an evicted generation from a
// changed one, so that fill is refused and redone; either way the Get
// answers the loaded value and Redis ends up holding it, with the lock
// released.
func TestEvictionWithoutInvalidateStillFills(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy string
		evict  func(t *testing.T, srv *redistest.Server)
	}{
		{"DEL lock", "noeviction", func(t *testing.T, srv *redistest.Server) { srv.CLI(t, "DEL", "ca:{k}:lock") }},
		{"DEL generation", "noeviction", func(t *testing.T, srv *redistest.Server) { srv.CLI(t, "DEL", "ca:{k}:gen") }},
		{"volatile-ttl evicts the lock", "volatile-ttl", func(t *testing.T, srv *redistest.Server) { evictUntilGone(t, srv, "ca:{k}:lock") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t, "--maxmemory-policy", tt.policy)
			db := newRow(t, "v")
			c := newCache(t, srv, db.load)
			ctx := testContext(t)
			res := getAsync(ctx, c, "k")
			await(t, db.entered, "the load to read the row")
			for _, suffix := range []string{":lock", ":gen"} {
				if n := srv.CLI(t, "EXISTS", "ca:{k}"+suffix); n != "1" {
					t.Fatalf("EXISTS ca:{k}%s during the load = %s, want 1", suffix, n)
				}
			}
			tt.evict(t, srv)
			db.letGo()
			if r := await(t, res, "the Get"); r.err != nil || r.val != "v" {
				t.Fatalf("Get(%q) = %q, %v; want %q, nil", "k", r.val, r.err, "v")
			}
			if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "v" {
				t.Errorf("Redis ca:{k} = %q (present %v), want %q", v, ok, "v")
			}
			if n := srv.CLI(t, "EXISTS", "ca:{k}:lock"); n != "0" {
				t.Errorf("EXISTS ca:{k}:lock after the Get = %s, want 0 (the lock released)", n)
			}
		})
	}
}

// TestFenceUnderMaxmemory makes Redis evict for real: after the Invalidate
// the test lowers maxmemory just above the memory in use and writes
// long-lived filler keys until the policy has evicted the generation. No
// policy may let the old load's fill through.
func TestFenceUnderMaxmemory(t *testing.T) {
	for _, policy := range []string{"volatile-ttl", "allkeys-lru", "volatile-lru", "allkeys-random"} {
		t.Run(policy, func(t *testing.T) {
			srv := redistest.Start(t, "--maxmemory-policy", policy)
			invalidatedLoad(t, srv, func() { evictUntilGone(t, srv, "ca:{k}:gen") })
		})
	}
}

// evictUntilGone sets maxmemory a little above the memory in use and
// writes filler keys (with a TTL of an hour, longer than any key of the
// cache) until Redis has evicted key, then lifts the limit.
func evictUntilGone(t *testing.T, srv *redistest.Server, key string) {
	t.Helper()
	if srv.CLI(t, "EXISTS", key) != "1" {
		t.Fatalf("EXISTS %s = 0 before the eviction, want 1", key)
	}
	used := infoField(t, srv, "memory", "used_memory")
	srv.CLI(t, "CONFIG", "SET", "maxmemory", strconv.FormatInt(used+256<<10, 10))
	defer srv.CLI(t, "CONFIG", "SET", "maxmemory", "0")
	rdb := srv.Client(t)
	defer rdb.Close()
	filler := strings.Repeat("x", 8<<10)
	const maxFillers = 5000
	for i := range maxFillers {
		if err := rdb.Set(context.Background(), "filler:"+strconv.Itoa(i), filler, time.Hour).Err(); err != nil {
			t.Fatalf("SET filler:%d = %v, want OK (the policy should evict)", i, err)
		}
		if srv.CLI(t, "EXISTS", key) == "0" {
			t.Logf("%s evicted after %d filler writes (evicted_keys %d)", key, i+1, infoField(t, srv, "stats", "evicted_keys"))
			return
		}
	}
	t.Fatalf("%s still present after %d filler writes under maxmemory", key, maxFillers)
}

// infoField returns the integer field name of INFO section.
func infoField(t *testing.T, srv *redistest.Server, section, name string) int64 {
	t.Helper()
	for line := range strings.SplitSeq(srv.CLI(t, "INFO", section), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO %s %s = %q, want an integer", section, name, v)
			}
			return n
		}
	}
	t.Fatalf("INFO %s has no field %s", section, name)
	return 0
}
