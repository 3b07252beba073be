package cacheaside_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestReadFirstNeverOlderThanAWrite races the read first's index by key
// (l1.Front) against writes on two read-first Caches sharing a Redis
// under WithSyncInvalidation: an L1 of 8 entries for 64 keys, so that the
// index's slots are shared, otter evicts all the time, and a slot may
// hold an entry otter has let go of when its key is invalidated. Each
// key's version only grows; once a write (Set, Invalidate, Clear or
// InvalidateTag after the database moved on) has returned nil on either
// process, no Get started afterwards on either returns an older version.
func TestReadFirstNeverOlderThanAWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []string
	}{
		// InvalidateTag does not reach a value Set wrote (it carries no
		// tags), so the tag run writes the database and invalidates.
		{"set-invalidate-clear", []string{"set", "set", "invalidate", "invalidate", "clear"}},
		{"invalidate-tag", []string{"invalidate", "tag"}},
	} {
		t.Run(tc.name, func(t *testing.T) { raceReadFirst(t, tc.ops) })
	}
}

func raceReadFirst(t *testing.T, ops []string) {
	const keys = 64
	srv := redistest.Start(t)
	var db [keys]atomic.Int64
	load := func(ctx context.Context, k int) (int64, error) {
		cacheaside.Tag(ctx, "t"+strconv.Itoa(k))
		return db[k].Load(), nil
	}
	opts := []cacheaside.Option{
		cacheaside.WithL1(cacheaside.L1{Size: 8, TTL: time.Minute}),
		cacheaside.WithSyncInvalidation(10 * time.Second),
	}
	caches := []*cacheaside.Cache[int, int64]{newCache(t, srv, load, opts...), newCache(t, srv, load, opts...)}
	waitListening(t, srv, caches[1], caches[0], -1)
	waitListening(t, srv, caches[0], caches[1], -1)

	// committed[k] is the version of k that a Get started now must not
	// be older than.
	var committed [keys]atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var stale, getErrs, writes, writeErrs atomic.Int64
	var firstStale sync.Once
	for w := range 2 {
		wg.Add(1)
		go func() { // writer w owns the keys k with k%2 == w
			defer wg.Done()
			c := caches[w]
			for i := 0; ctx.Err() == nil; i++ {
				k := w + 2*rand.IntN(keys/2)
				if rand.IntN(2) == 0 {
					k = w // a hot key too
				}
				n := db[k].Load() + 1
				db[k].Store(n)
				var err error
				switch op := ops[i%len(ops)]; op {
				case "set":
					err = c.Set(context.Background(), k, n)
				case "invalidate":
					err = c.Invalidate(context.Background(), k)
				case "clear":
					err = c.Clear(context.Background())
				case "tag":
					err = c.InvalidateTag(context.Background(), "t"+strconv.Itoa(k))
				}
				if err != nil {
					writeErrs.Add(1)
					t.Logf("write of %d: %v", k, err)
					continue
				}
				writes.Add(1)
				committed[k].Store(n)
			}
		}()
	}
	for r := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := caches[r%2]
			for ctx.Err() == nil {
				k := rand.IntN(keys)
				if rand.IntN(4) != 0 {
					k = rand.IntN(4) // hot keys, answered by the index
				}
				want := committed[k].Load()
				v, err := c.Get(context.Background(), k)
				if err != nil {
					getErrs.Add(1)
					continue
				}
				if v < want {
					stale.Add(1)
					firstStale.Do(func() {
						t.Errorf("Get(%d) on process %d = version %d, started after version %d was written", k, r%2, v, want)
					})
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d writes (%d failed), %d stale Gets, %d Get errors", writes.Load(), writeErrs.Load(), stale.Load(), getErrs.Load())
	if writes.Load() < 20 {
		t.Errorf("%d writes in 3s, want at least 20 for the race to mean anything", writes.Load())
	}
	if getErrs.Load() > 0 {
		t.Errorf("%d Gets failed, want none", getErrs.Load())
	}
	for _, c := range caches {
		if s := c.Stats(); s.LocalHits == 0 {
			t.Errorf("Stats().LocalHits = 0, want the read first to have answered some Gets")
		}
	}
}
