package redisguard

import (
	"bytes"
	"context"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// goroutineID returns the number runtime.Stack gives the calling goroutine.
func goroutineID() string {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	return string(b[:bytes.IndexByte(b, ' ')])
}

// watchedGuard returns a client of a Redis of its own that ignores
// context deadlines, and a Guard over it, closed at the end of the test.
func watchedGuard(t *testing.T) (*redis.Client, *Guard) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	g := New(Config{Client: rdb, Budget: 5 * time.Second, Limit: 5 * time.Second, MaxAbandoned: 8})
	t.Cleanup(g.Close)
	return rdb, g
}

// TestWatchedCallsReuseGoroutines: consecutive watched calls (a client
// that ignores context deadlines) run on a goroutine that ran a call
// before, whose stack has grown already, not on a new goroutine each; Close
// ends the idle ones (goleak in TestMain). Each call after the first is
// made once a worker waits for one: a call made while the previous call's
// worker is still on its way back (its caller answered already) starts a
// worker, as it should, and on a busy machine that happened often enough
// to make the count of goroutines vary from run to run.
func TestWatchedCallsReuseGoroutines(t *testing.T) {
	rdb, g := watchedGuard(t)
	ctx := context.Background()
	seen := map[string]bool{}
	const calls = 20
	for i := range calls {
		if i > 0 {
			redistest.WaitFor(t, workerIdle/2, "a worker waits for a call", func() bool {
				return strings.Contains(goroutines(), "[select]:\n"+workerFunc)
			})
		}
		var id string
		err := g.Do(ctx, "k", func(ctx context.Context) error {
			id = goroutineID()
			return rdb.Get(ctx, "k").Err()
		})
		if err != nil && err != redis.Nil {
			t.Fatalf("Do(GET k) = %v, want redis.Nil", err)
		}
		seen[id] = true
	}
	if len(seen) > 2 {
		t.Errorf("%d consecutive watched calls ran on %d goroutines, want at most 2", calls, len(seen))
	}
}

// TestWatchedCallsDoNotKeepGuard: a Guard dropped without Close after a
// watched call is collected at once, not only when the worker that ran
// the call has been idle for workerIdle: as for the dial hook
// (TestDialHookDoesNotKeepGuard), nothing the Guard started holds it.
// Its idle worker then ends too.
func TestWatchedCallsDoNotKeepGuard(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	collected := make(chan struct{})
	func() {
		g := New(Config{Client: rdb, Budget: 5 * time.Second, Limit: 5 * time.Second, MaxAbandoned: 8})
		err := g.Do(context.Background(), "k", func(ctx context.Context) error { return rdb.Get(ctx, "k").Err() })
		if err != nil && err != redis.Nil {
			t.Fatalf("Do(GET k) = %v, want redis.Nil", err)
		}
		runtime.AddCleanup(g, func(ch chan struct{}) { close(ch) }, collected)
	}()
	deadline := time.Now().Add(workerIdle / 2)
	for time.Now().Before(deadline) {
		runtime.GC()
		select {
		case <-collected:
			redistest.WaitFor(t, workerIdle/2, "the dropped Guard's idle worker ends", func() bool {
				return !strings.Contains(goroutines(), workerFunc)
			})
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Errorf("a Guard dropped after a watched call was not collected within %v", workerIdle/2)
}

// workerFunc is how a worker's function appears in a goroutine's stack.
const workerFunc = "github.com/cacheaside/cacheaside/internal/redisguard.(*workers).work("

// goroutines returns the stacks of every goroutine.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestWatchedCallsCarryTheirCallersLabels: a watched call runs under the
// profiler labels of its caller (pprof.Do), as on a goroutine started for
// it, not under those of the caller whose call started the worker.
func TestWatchedCallsCarryTheirCallersLabels(t *testing.T) {
	rdb, g := watchedGuard(t)
	for _, req := range []string{"first", "second", "third"} {
		var labels string
		pprof.Do(context.Background(), pprof.Labels("req", req), func(ctx context.Context) {
			err := g.Do(ctx, "k", func(ctx context.Context) error {
				labels = callLabels()
				return rdb.Get(ctx, "k").Err()
			})
			if err != nil && err != redis.Nil {
				t.Fatalf("Do(GET k) = %v, want redis.Nil", err)
			}
		})
		if want := `"req":"` + req + `"`; !strings.Contains(labels, want) {
			t.Errorf("call of caller %s ran under labels %q, want %s", req, labels, want)
		}
	}
}

// callLabels returns the profiler labels of the calling goroutine, as the
// goroutine profile shows them: it asks another goroutine to read the
// profile while it waits in labelProbe.
func callLabels() string {
	read := make(chan string)
	go func() {
		var buf bytes.Buffer
		for {
			buf.Reset()
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			for rec := range strings.SplitSeq(buf.String(), "\n\n") {
				if strings.Contains(rec, "labelProbe") {
					_, l, _ := strings.Cut(rec, "# labels: ")
					l, _, _ = strings.Cut(l, "\n")
					read <- l
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return labelProbe(read)
}

//go:noinline
func labelProbe(read chan string) string { return <-read }

// countHook counts the commands that pass through it.
type countHook struct{ n *atomic.Int64 }

func (countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestTimeoutCloneDropsHooks pins the go-redis behaviour that makes a
// default-options client's calls watched (a goroutine each) rather than
// inline: the only per-call socket deadline go-redis offers such a client
// is Client.WithTimeout, and its clone runs none of the client's hooks,
// not even those added before it was made, so a user's tracing and
// metrics hooks would not see the cache's commands. If this fails after a
// go-redis upgrade, the clone keeps hooks and a default client's calls
// could run inline through it (Config.Clone).
func TestTimeoutCloneDropsHooks(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	var n atomic.Int64
	rdb.AddHook(countHook{&n})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil { // dials: the handshake's commands pass the hook too
		t.Fatal(err)
	}
	before := n.Load()
	if err := rdb.Ping(ctx).Err(); err != nil || n.Load() != before+1 {
		t.Fatalf("PING through the client = %v with %d hook calls, want nil with 1", err, n.Load()-before)
	}
	clone := rdb.WithTimeout(time.Second)
	if err := clone.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the clone = %v", err)
	}
	if got := n.Load() - before; got != 1 {
		t.Errorf("hook calls after a PING through the client and one through its WithTimeout clone = %d, want 1 (the clone drops hooks); go-redis changed: see the test's comment", got)
	}
}
