package cacheaside_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// The clock's lease (internal/tagclock/lease.go): a Get's read goes
// without the clock key while its process read the clock less than
// tagclock.Trust before, and Clear and InvalidateTag return only once no
// process goes by a clock read before they wrote it.

// genLoader loads the generation current at the load: a value whose
// generation is below the one a Clear began with was loaded before it.
type genLoader struct{ gen atomic.Int64 }

func (g *genLoader) load(ctx context.Context, key string) (string, error) {
	cacheaside.Tag(ctx, "t")
	return strconv.FormatInt(g.gen.Load(), 10), nil
}

// TestClearHoldsWhileAReaderTrustsItsClock: a reader whose Gets of other
// keys keep its clock's lease held still never returns, once a Clear or
// InvalidateTag of another process has returned, a value loaded before
// it. Without the wait at the end of Clear (tagclock.WaitSettled), the
// reader judged the value by the clock it read before the Clear, in
// most rounds. With an L1 read first and WithSyncInvalidation, the
// reader's L1 holds no such value either.
func TestClearHoldsWhileAReaderTrustsItsClock(t *testing.T) {
	for _, mode := range []string{"clear", "tag", "l1-sync"} {
		t.Run(mode, func(t *testing.T) {
			srv := redistest.Start(t)
			db := &genLoader{}
			var opts []cacheaside.Option
			if mode == "l1-sync" {
				opts = append(opts, cacheaside.WithL1(cacheaside.L1{}), cacheaside.WithSyncInvalidation(5*time.Second))
			}
			reader := newCache(t, srv, db.load, opts...)
			writer := newCache(t, srv, db.load, opts...)
			ctx := testContext(t)

			// The reader's other Gets: a read every few tens of
			// microseconds, each lease a millisecond long.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					_, _ = reader.Get(ctx, "other"+strconv.Itoa(i%50))
				}
			}()
			defer func() { close(stop); wg.Wait() }()

			const rounds = 150
			for i := range rounds {
				if _, err := reader.Get(ctx, "k"); err != nil {
					t.Fatalf("round %d: warm Get = %v", i, err)
				}
				before := db.gen.Add(1)
				var err error
				if mode == "tag" {
					err = writer.InvalidateTag(ctx, "t")
				} else {
					err = writer.Clear(ctx)
				}
				if err != nil {
					t.Fatalf("round %d: invalidation = %v", i, err)
				}
				v, err := reader.Get(ctx, "k")
				if err != nil {
					t.Fatalf("round %d: Get after = %v", i, err)
				}
				if g, _ := strconv.ParseInt(v, 10, 64); g < before {
					t.Fatalf("round %d: Get after the invalidation returned generation %d, loaded before it (want >= %d)", i, g, before)
				}
			}
		})
	}
}

// TestHitReadsCarryTheClockOncePerTrust: of a run of Gets on one
// goroutine, one read carries the clock key per tagclock.Trust at most
// (each extends the lease by Trust from when it was sent), the others
// go out as plain GETs.
func TestHitReadsCarryTheClockOncePerTrust(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) { return "v:" + key, nil })
	ctx := testContext(t)
	for i := range 20 {
		mustGetValue(t, c, "k"+strconv.Itoa(i), "v:k"+strconv.Itoa(i), "warm")
	}
	// Every key is warm: from here on the only reads are the Gets', an
	// MGET when it carries the clock, a GET when not (redisCommands).
	srv.CLI(t, "CONFIG", "RESETSTAT")
	start := time.Now()
	const gets = 2000
	for i := range gets {
		if _, err := c.Get(ctx, "k"+strconv.Itoa(i%20)); err != nil {
			t.Fatalf("Get = %v", err)
		}
	}
	took := time.Since(start)
	withClock, plain := redisCommands(t, srv, "mget"), redisCommands(t, srv, "get")
	limit := int64(took/tagclock.Trust) + 1
	t.Logf("%d Gets in %v: %d reads carried the clock (at most %d), %d plain GETs", gets, took, withClock, limit, plain)
	if withClock > limit {
		t.Errorf("%d reads carried the clock in %v, want at most %d (one per %v)", withClock, took, limit, tagclock.Trust)
	}
	if withClock+plain != gets {
		t.Errorf("reads = %d, want %d (one per Get)", withClock+plain, gets)
	}
}
