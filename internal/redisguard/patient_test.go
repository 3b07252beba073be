package redisguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestPatiently: a try that failed slow (ErrSlow, cut at the budget while
// the node answered) is tried again until it succeeds or the limit passes
// since the first try; a try judged silent, skipped or past the limit, or
// any try on the timeout clone, is not; nor is one after ctx ended.
func TestPatiently(t *testing.T) {
	slow := fmt.Errorf("%w: %w", ErrSlow, context.DeadlineExceeded)
	const limit = 300 * time.Millisecond
	for _, tc := range []struct {
		name      string
		clone     bool
		errs      []error // the tries' errors in turn; the last repeats
		cancelled bool
		wantTries int // exact, or at least when atLeast
		atLeast   bool
		wantErr   error
	}{
		{name: "slow then done", errs: []error{slow, slow, nil}, wantTries: 3},
		{name: "silent", errs: []error{errBudget}, wantTries: 1, wantErr: ErrIncomplete},
		{name: "skipped", errs: []error{ErrSkipped}, wantTries: 1, wantErr: ErrSkipped},
		{name: "past the limit", errs: []error{errOverdue}, wantTries: 1, wantErr: ErrSlow},
		{name: "outage", errs: []error{errRefused}, wantTries: 1, wantErr: errRefused},
		{name: "clone", clone: true, errs: []error{slow}, wantTries: 1, wantErr: ErrSlow},
		{name: "caller gone", cancelled: true, errs: []error{slow}, wantTries: 1, wantErr: ErrSlow},
		{name: "slow to the limit", errs: []error{slow}, wantTries: 3, atLeast: true, wantErr: ErrSlow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Guard{budget: 100 * time.Millisecond, limit: limit, clone: tc.clone}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			tries := 0
			start := time.Now()
			err := g.patiently(ctx, func() error {
				err := tc.errs[min(tries, len(tc.errs)-1)]
				tries++
				return err
			})
			took := time.Since(start)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("patiently() = %v, want %v", err, tc.wantErr)
			}
			if tries != tc.wantTries && !(tc.atLeast && tries >= tc.wantTries) {
				t.Errorf("patiently() made %d tries, want %d (at least: %v)", tries, tc.wantTries, tc.atLeast)
			}
			// Never much past the limit: one pause at most beyond it,
			// with a margin for a loaded machine.
			if took > limit+slowRetryMax+time.Second {
				t.Errorf("patiently() took %v, want at most about the limit %v", took, limit)
			}
		})
	}
}

// TestPatientTriesDoNotOverlap: a patient call never starts a try while
// an earlier one may still run, so a call's function may write the
// caller's variables plainly (clear.go's runClock, acks.go's got, ...):
// when the call succeeds, what they hold is the last try's, and nothing
// writes them after it returned. A try that the guard stopped waiting for
// fails the call with ErrIncomplete and is never followed by another;
// only a try that ended (cut on the caller's goroutine, or a pool wait
// given up) while the node answered others is. Each case slows the first
// INCR of the call with a go-redis hook while PINGs show the node
// answering; -race reports a try that writes res while another runs or
// after the call returned.
func TestPatientTriesDoNotOverlap(t *testing.T) {
	const budget, limit, wait = 200 * time.Millisecond, time.Second, 200 * time.Millisecond
	srv := redistest.Start(t)
	apis := []struct {
		name string
		call patientCall
		// waits is set for DoWaitingPatient, whose calls are not cut at
		// the budget but at wait plus the limit.
		waits bool
	}{
		{"DoPatient", func(ctx context.Context, g *Guard, key string, fn func(context.Context) error) error {
			return g.DoPatient(ctx, key, fn)
		}, false},
		{"PerNodePatient", func(ctx context.Context, g *Guard, key string, fn func(context.Context) error) error {
			_, err := g.PerNodePatient(ctx, []string{key}, nil, func(ctx context.Context, _ []int) error { return fn(ctx) })
			return err
		}, false},
		{"DoWaitingPatient", func(ctx context.Context, g *Guard, key string, fn func(context.Context) error) error {
			return g.DoWaitingPatient(ctx, key, wait, fn)
		}, true},
	}
	for _, api := range apis {
		for _, tc := range []struct {
			name   string
			inline bool
			first  slowness
			ok     bool // the call succeeds
			tries  int32
		}{
			// Waited for past the budget while the node answers: one try.
			{name: "watched slow", first: slowness{hold: 3 * budget}, ok: true, tries: 1},
			// Abandoned at the limit (DoWaiting: wait plus the limit) while
			// it still runs: ErrIncomplete, and no second try.
			{name: "watched past the limit", first: slowness{hold: limit + wait + budget}, tries: 1},
			// A pool wait given up while the node answered: nothing was
			// sent, the try ended, and a second one is sent.
			{name: "watched pool wait", first: slowness{poolWait: true}, ok: true, tries: 2},
			{name: "inline pool wait", inline: true, first: slowness{poolWait: true}, ok: true, tries: 2},
			// Cut at its deadline on the caller's goroutine: for Do at the
			// budget, slow, sent again; for DoWaiting at wait plus the
			// limit, past the limit, not sent again.
			{name: "inline cut", inline: true, first: slowness{cut: true}, ok: !api.waits, tries: map[bool]int32{false: 2, true: 1}[api.waits]},
		} {
			t.Run(api.name+"/"+tc.name, func(t *testing.T) {
				// The guard judges the node by the PINGs' replies, and on a
				// loaded machine may judge a case otherwise (a try silent,
				// say): every attempt must keep the tries apart, and one
				// of three must take the case's path.
				var outcomes []string
				for range 3 {
					tries, err := patientAttempt(t, srv, api.call, tc.inline, tc.first, budget, limit)
					if (err == nil) == tc.ok && tries == tc.tries {
						return
					}
					outcomes = append(outcomes, fmt.Sprintf("%d tries: %v", tries, err))
				}
				t.Errorf("%s with %s: %q in three attempts; want success %v after %d tries", api.name, tc.name, outcomes, tc.ok, tc.tries)
			})
		}
	}
}

// patientCall runs fn as a patient call of g for key.
type patientCall func(ctx context.Context, g *Guard, key string, fn func(context.Context) error) error

// patientAttempt runs call, on a fresh client and guard on srv, with a
// function that INCRs a counter and writes the try's number and reply to
// a variable of its caller, the first INCR slowed by first while PINGs
// show the node answering. It fails t where the tries overlapped, where a
// successful call's variable does not hold its last try's reply, where a
// try ran after the call returned, or where the function still ran when
// the call returned without ErrIncomplete; it returns how many tries the
// call made and its error.
func patientAttempt(t *testing.T, srv *redistest.Server, call patientCall, inline bool, first slowness, budget, limit time.Duration) (int32, error) {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 5 * time.Second, ContextTimeoutEnabled: inline})
	defer rdb.Close()
	g := New(Config{Client: rdb, Budget: budget, Limit: limit, MaxAbandoned: 8, Inline: inline})
	defer g.Close()
	ping := func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
	if err := g.Do(ctx, "k", ping); err != nil {
		t.Fatalf("Do(PING) = %v", err) // the node is no longer cold: inline calls get the budget
	}
	stopPings := answering(g, "k", 2*time.Millisecond, ping)
	defer stopPings()
	hook := &firstTry{cmd: "incr", slowness: first, node: g.cbs.forKey("k")}
	hook.armed.Store(true)
	rdb.AddHook(hook)

	type result struct {
		try int32
		n   int64
	}
	var (
		res               result // plain: written by each try, as runClock's res
		tries, running    atomic.Int32
		overlaps, atStart atomic.Int32
	)
	err := call(ctx, g, "k", func(ctx context.Context) error {
		if r := running.Add(1); r > 1 {
			overlaps.Add(1)
			atStart.Store(r - 1)
		}
		defer running.Add(-1)
		try := tries.Add(1)
		n, err := rdb.Incr(ctx, "n").Result()
		res = result{try, n}
		return err
	})
	made, still := tries.Load(), running.Load()
	if err == nil && res.try != made {
		t.Errorf("patient call returned with the reply of try %d of %d, want the last try's", res.try, made)
	}
	if still != 0 && !errors.Is(err, ErrIncomplete) {
		t.Errorf("patient call = %v with a try still running, want ErrIncomplete", err)
	}
	stopPings()
	g.Close() // waits for an abandoned try
	if n := overlaps.Load(); n > 0 {
		t.Errorf("patient call (%v): a try started while %d ran, %d times; want one try at a time", err, atStart.Load(), n)
	}
	if after := tries.Load(); after != made {
		t.Errorf("patient call (%v) returned after %d tries, and %d more started after it; want none", err, made, after-made)
	}
	return made, err
}

// firstTry is a go-redis hook that slows the first command named cmd
// while armed, as slowness says; node is the guard's node of the client,
// whose replies to other calls it may wait for.
type firstTry struct {
	cmd string
	slowness
	node  *Node
	armed atomic.Bool
}

// slowness is how firstTry slows its command: after the server answered
// it, for hold; or, with cut, until a prompt reply to another call and
// then until its context ends, failing it with the context's error; or,
// with poolWait, before it is sent, until a reply to another call,
// failing it with redis.ErrPoolTimeout, as a wait for a pooled connection
// that gave up while the node answered others.
type slowness struct {
	hold     time.Duration
	cut      bool
	poolWait bool
}

func (h *firstTry) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *firstTry) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *firstTry) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != h.cmd || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		since := clock()
		if h.poolWait {
			waitPast(ctx, h.node.lastReply, since)
			cmd.SetErr(redis.ErrPoolTimeout)
			return redis.ErrPoolTimeout
		}
		err := next(ctx, cmd)
		if h.cut {
			waitPast(ctx, &h.node.lastPrompt, since)
			<-ctx.Done()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		time.Sleep(h.hold)
		return err
	}
}

// waitPast waits until t is past since, or ctx ends.
func waitPast(ctx context.Context, t *atomic.Int64, since int64) {
	for t.Load() <= since {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// answering sends fn, a call for key, through g every period until the
// returned stop is called (and waits for the last call): key's node is
// seen answering meanwhile. stop is safe to call more than once.
func answering(g *Guard, key string, period time.Duration, fn func(context.Context) error) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(period):
			}
			_ = g.Do(context.Background(), key, fn)
		}
	})
	return sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
}
