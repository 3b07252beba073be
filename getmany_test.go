package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// batchDB is a database that answers batch and single reads of ids below
// size and counts the calls.
type batchDB struct {
	size         int64
	batchCalls   atomic.Int64
	singleCalls  atomic.Int64
	keysLoaded   atomic.Int64
	fail         atomic.Bool
	delay        time.Duration
	lastBatchLen atomic.Int64
}

func (db *batchDB) value(id int64) string { return "v" + strconv.FormatInt(id, 10) }

func (db *batchDB) batch(ctx context.Context, ids []int64) (map[int64]string, error) {
	db.batchCalls.Add(1)
	db.lastBatchLen.Store(int64(len(ids)))
	time.Sleep(db.delay)
	if db.fail.Load() {
		return nil, errors.New("database down")
	}
	out := make(map[int64]string, len(ids))
	for _, id := range ids {
		db.keysLoaded.Add(1)
		if id < db.size {
			out[id] = db.value(id)
		}
	}
	return out, nil
}

func (db *batchDB) single(ctx context.Context, id int64) (string, error) {
	db.singleCalls.Add(1)
	time.Sleep(db.delay)
	if id >= db.size {
		return "", fmt.Errorf("id %d: %w", id, cacheaside.ErrNotFound)
	}
	return db.value(id), nil
}

func commandCalls(t *testing.T, srv *redistest.Server, cmd string) int64 {
	t.Helper()
	for line := range strings.SplitSeq(srv.CLI(t, "INFO", "commandstats"), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return n
		}
	}
	return 0
}

// TestGetManyOneMGETOneBatchLoad checks the batch path: 1,000 keys of which
// 10% are missing cost one MGET (and one more for the clock check before
// the fill) and one batch-loader call, and the misses
// are written back so that the next GetMany loads nothing.
func TestGetManyOneMGETOneBatchLoad(t *testing.T) {
	srv := redistest.Start(t)
	db := &batchDB{size: 1_000_000}
	c := newCache(t, srv, db.single, cacheaside.WithBatchLoader(db.batch))
	ctx := context.Background()
	ids := make([]int64, 1000)
	for i := range ids {
		ids[i] = int64(i)
		if i%10 != 0 {
			if err := c.Set(ctx, ids[i], db.value(ids[i])); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv.CLI(t, "CONFIG", "RESETSTAT")
	got, err := c.GetMany(ctx, ids)
	if err != nil {
		t.Fatalf("GetMany = %v", err)
	}
	if len(got) != len(ids) {
		t.Fatalf("GetMany returned %d values, want %d", len(got), len(ids))
	}
	for _, id := range ids {
		if got[id] != db.value(id) {
			t.Fatalf("GetMany[%d] = %q, want %q", id, got[id], db.value(id))
		}
	}
	// One MGET reads the 1,000 values (and the clock); one more reads the
	// clock before the batch's fill (clear.go, mayFill).
	if n := commandCalls(t, srv, "mget"); n != 2 {
		t.Errorf("MGET calls = %d, want 2 (the read and the check before the fill)", n)
	}
	if n := db.batchCalls.Load(); n != 1 {
		t.Errorf("batch loader calls = %d, want 1", n)
	}
	if n := db.lastBatchLen.Load(); n != 100 {
		t.Errorf("batch loader got %d keys, want the 100 misses", n)
	}
	if n := db.singleCalls.Load(); n != 0 {
		t.Errorf("single loader calls = %d, want 0", n)
	}
	if _, err := c.GetMany(ctx, ids); err != nil {
		t.Fatal(err)
	}
	if n := db.batchCalls.Load(); n != 1 {
		t.Errorf("batch loader calls after a second GetMany = %d, want still 1 (misses written back)", n)
	}
}

// TestGetManyNotFoundAndErrors checks that keys the batch loader does not
// return are negative-cached, and that a batch loader error is returned
// for every missing key and never cached as not found.
func TestGetManyNotFoundAndErrors(t *testing.T) {
	srv := redistest.Start(t)
	db := &batchDB{size: 5}
	c := newCache(t, srv, db.single, cacheaside.WithBatchLoader(db.batch))
	ctx := context.Background()

	got, err := c.GetMany(ctx, []int64{1, 2, 7, 8})
	if err != nil {
		t.Fatalf("GetMany = %v, want nil (missing keys are not errors)", err)
	}
	if len(got) != 2 || got[1] != "v1" || got[2] != "v2" {
		t.Fatalf("GetMany = %v, want 1 and 2 only", got)
	}
	if _, err := c.Get(ctx, 7); !errors.Is(err, cacheaside.ErrNotFound) {
		t.Errorf("Get(7) after GetMany = %v, want ErrNotFound from the negative cache", err)
	}
	if n := db.singleCalls.Load(); n != 0 {
		t.Errorf("single loader calls = %d, want 0: 7 was negative-cached", n)
	}

	db.fail.Store(true)
	got, err = c.GetMany(ctx, []int64{1, 3, 4})
	if err == nil || errors.Is(err, cacheaside.ErrNotFound) {
		t.Fatalf("GetMany with a failing batch loader = %v, want the loader's error", err)
	}
	if got[1] != "v1" || len(got) != 1 {
		t.Errorf("GetMany with a failing batch loader = %v, want the cached key 1 only", got)
	}
	db.fail.Store(false)
	got, err = c.GetMany(ctx, []int64{3, 4})
	if err != nil || got[3] != "v3" || got[4] != "v4" {
		t.Errorf("GetMany after the database recovered = %v, %v; want 3 and 4 (the error was not cached)", got, err)
	}
}

// TestGetManySharesFlightsWithGet checks that a key missing for both a Get
// and a concurrent GetMany is loaded once.
func TestGetManySharesFlightsWithGet(t *testing.T) {
	srv := redistest.Start(t)
	db := &batchDB{size: 1000, delay: 200 * time.Millisecond}
	c := newCache(t, srv, db.single, cacheaside.WithBatchLoader(db.batch))
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if v, err := c.Get(ctx, 42); err != nil || v != "v42" {
			t.Errorf("Get(42) = %q, %v", v, err)
		}
	}()
	time.Sleep(50 * time.Millisecond) // let the Get start its load
	go func() {
		defer wg.Done()
		got, err := c.GetMany(ctx, []int64{41, 42, 43})
		if err != nil || got[42] != "v42" || got[41] != "v41" || got[43] != "v43" {
			t.Errorf("GetMany = %v, %v", got, err)
		}
	}()
	wg.Wait()
	if n := db.keysLoaded.Load() + db.singleCalls.Load(); n != 3 {
		t.Errorf("keys loaded = %d, want 3: key 42 must be loaded once", n)
	}
}

// TestGetManyWithoutBatchLoader checks the fallback to the single loader.
func TestGetManyWithoutBatchLoader(t *testing.T) {
	srv := redistest.Start(t)
	db := &batchDB{size: 50}
	// A slow loader that tracks how many calls run at once: the fallback
	// runs at most 16.
	var running, most atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, id int64) (string, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		return db.single(ctx, id)
	})
	ids := make([]int64, 60)
	for i := range ids {
		ids[i] = int64(i)
	}
	got, err := c.GetMany(context.Background(), ids)
	if err != nil || len(got) != 50 {
		t.Fatalf("GetMany = %d values, %v; want 50, nil", len(got), err)
	}
	if n := db.singleCalls.Load(); n != 60 {
		t.Errorf("single loader calls = %d, want 60", n)
	}
	if n := most.Load(); n > 16 || n < 2 {
		t.Errorf("%d single loads ran at once, want between 2 and 16 (parallel, bounded)", n)
	}
}

// TestGetManyRedisDown checks that GetMany fails open.
func TestGetManyRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	db := &batchDB{size: 100}
	c := newCache(t, srv, db.single, cacheaside.WithBatchLoader(db.batch), cacheaside.WithRedisTimeout(50*time.Millisecond))
	srv.Kill()
	got, err := c.GetMany(context.Background(), []int64{1, 2, 3})
	if err != nil || len(got) != 3 {
		t.Fatalf("GetMany with Redis down = %v, %v; want 3 values, nil", got, err)
	}
}
