package redisguard

import (
	"context"
	"errors"
	"runtime/pprof"
	"sync"
	"time"
)

// The goroutines of watched calls (watched.go, waiting.go). A call run on
// a new goroutine pays for that goroutine's stack to grow, copy by copy,
// to what a go-redis call needs: in BenchmarkGetHotKey's profile on a default client, a fifth of
// the CPU of each Redis read went to runtime.copystack. So a goroutine
// that has run a call waits, up to workerIdle, for the next one, and a
// busy process runs its watched calls on goroutines whose stacks have
// grown already. Nothing changes for the call: it still has a goroutine of
// its own while it runs, under its caller's profiler labels (pprof.Do),
// and Close still waits for it.

// errCallExited is the error of a watched call whose goroutine a hook
// ended with runtime.Goexit instead of returning.
var errCallExited = errors.New("redisguard: a hook ended the goroutine of a Redis call with runtime.Goexit")

// workerIdle is how long a worker with no call waits for one before it
// ends: long enough to be there for the next call of a busy process, short
// enough that a burst of calls leaves no goroutines behind for long.
const workerIdle = time.Second

// workers runs calls on goroutines it reuses. Its goroutines hold only
// the workers, not the Guard, nor a pointer into it (refused.go: the
// client's dial hook holds the Guard weakly, so that a dropped Guard is
// collected; New then stops its workers).
type workers struct {
	wg   sync.WaitGroup // every worker: Close waits for them
	jobs chan job       // unbuffered: a send succeeds only to an idle worker
	quit chan struct{}  // closed by stop: idle workers end
	once sync.Once
}

func newWorkers() *workers {
	return &workers{jobs: make(chan job), quit: make(chan struct{})}
}

// A job is a call handed to a worker: fn, run under the profiler labels of
// ctx, its caller's, as a goroutine started by the caller would be.
type job struct {
	ctx context.Context
	fn  func()
}

// run runs fn on an idle worker, or on a new one when none is idle.
func (w *workers) run(ctx context.Context, fn func()) {
	j := job{ctx: ctx, fn: fn}
	select {
	case w.jobs <- j:
		return
	default:
	}
	w.wg.Add(1)
	go w.work(j)
}

// work runs j, then the jobs handed to it until it has been idle for
// workerIdle or stop is called.
func (w *workers) work(j job) {
	defer w.wg.Done()
	var idle *time.Timer
	for {
		pprof.SetGoroutineLabels(j.ctx)
		j.fn()
		pprof.SetGoroutineLabels(context.Background()) // idle: nobody's
		if idle == nil {
			idle = time.NewTimer(workerIdle)
			defer idle.Stop()
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case j = <-w.jobs:
		case <-idle.C:
			return
		case <-w.quit:
			return
		}
	}
}

// stop ends the idle workers, and each busy one once its job returns. It
// is safe to call more than once.
func (w *workers) stop() { w.once.Do(func() { close(w.quit) }) }

// close is stop, then waits for every worker to end.
func (w *workers) close() {
	w.stop()
	w.wg.Wait()
}
