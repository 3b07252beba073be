// Package restart detects a Redis that lost its data (restarted without
// persistence, flushed, or new) so that the caches on it can warm it up
// again.
//
// Each cache names a marker key. The watcher writes every marker with SET
// NX: the one process of a fleet whose write creates a marker found Redis
// empty, and warms the caches of that marker; the others see the marker and
// do nothing. A new run_id alone would not do: it also changes on a
// Sentinel failover that kept the data.
//
// The caches of a process that use one client share one watcher (Join):
// one goroutine, and one round trip per check (a pipeline per guard and
// node) for every marker due, each marker checked at the interval of the
// cache that asked for it (up to half an interval early, which keeps the
// checks of caches with one interval in the same round trips). The last
// cache to leave stops it.
package restart

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/cacheaside/cacheaside/internal/refcount"
	"github.com/redis/go-redis/v9"
)

// Check is one cache's marker check. Its fields are set before Join and
// not changed after.
type Check struct {
	// Guard sends the check's Redis calls (through Guard.Client).
	Guard *redisguard.Guard
	// Marker is the key whose absence means Redis lost its data.
	Marker string
	// Every is how often the marker is checked; it must be positive.
	Every time.Duration
	// Empty runs, on the watcher's goroutine, when this process created
	// the marker: it must start the warm-up and return without waiting
	// for it. It runs for every Check of the marker.
	Empty func()

	w   atomic.Pointer[Watcher]
	due time.Time // under w.mu
}

// Nudge asks for the check to run now (Redis came back: did it come back
// empty?). It never blocks, and does nothing before Join.
func (c *Check) Nudge() {
	if w := c.w.Load(); w != nil {
		w.mu.Lock()
		c.due = time.Time{}
		w.mu.Unlock()
		w.wake()
	}
}

// Watcher is one client's restart watcher.
type Watcher struct {
	token string // starts every marker value this watcher writes
	stop  context.CancelFunc
	wg    sync.WaitGroup
	kick  chan struct{}

	// round is held for a whole check: a Check that leaves waits for the
	// check using its guard to end.
	round sync.Mutex

	mu     sync.Mutex
	checks []*Check
	// seq numbers the marker writes. unsureFrom is, per marker, the first
	// of those that failed and may have run anyway since the last one
	// known to have run. Only the watcher's goroutine touches them.
	seq        uint64
	unsureFrom map[string]uint64
	checked    atomic.Uint64 // marker writes sent, for tests
}

// watchers holds the shared watchers by client.
var watchers refcount.Registry[redis.UniversalClient, *Watcher]

// Join adds c to client's watcher, starting it on first use; c is checked
// at once, then every c.Every. It returns the watcher and the function
// that removes c (safe to call more than once): after leave returns, c's
// Guard is no longer used and c.Empty is not called; the last leave stops
// the watcher and waits for its goroutine. A client that is not a pointer
// gets a watcher of its own. Join does no I/O.
func Join(client redis.UniversalClient, c *Check) (w *Watcher, leave func()) {
	w, release := watchers.Acquire(client, func() *Watcher { return start() })
	w.mu.Lock()
	w.checks = append(w.checks, c)
	w.mu.Unlock()
	c.w.Store(w)
	w.wake()
	return w, sync.OnceFunc(func() { w.leave(c, release) })
}

// start builds and starts a watcher on client.
func start() *Watcher {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	ctx, stop := context.WithCancel(context.Background())
	w := &Watcher{
		token:      hex.EncodeToString(id[:]) + "/",
		stop:       stop,
		kick:       make(chan struct{}, 1),
		unsureFrom: map[string]uint64{},
	}
	w.wg.Go(func() { w.run(ctx) })
	return w
}

// leave removes c, and stops the watcher when c was its last Check.
func (w *Watcher) leave(c *Check, release func() (last bool)) {
	c.w.Store(nil)
	w.round.Lock() // no check in progress uses c
	w.mu.Lock()
	kept := make([]*Check, 0, len(w.checks))
	for _, o := range w.checks {
		if o != c {
			kept = append(kept, o)
		}
	}
	w.checks = kept
	w.mu.Unlock()
	w.round.Unlock()

	if release() {
		w.stop()
		w.wg.Wait()
	}
}

// Checked returns how many marker writes the watcher has sent.
func (w *Watcher) Checked() uint64 { return w.checked.Load() }

// wake asks the goroutine to look for checks due. It never blocks.
func (w *Watcher) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// run checks the markers due, then sleeps until the next is due or a
// Check is added or nudged, until ctx is done.
func (w *Watcher) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := w.checkDue(ctx)
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

// checkDue checks every marker that some Check wants checked now and
// returns how long until the next is due.
func (w *Watcher) checkDue(ctx context.Context) (next time.Duration) {
	w.round.Lock()
	defer w.round.Unlock()
	now := time.Now()
	byMarker := map[string][]*Check{} // every Check of a marker due
	var due []*Check
	w.mu.Lock()
	for _, c := range w.checks {
		// Up to half an interval early, so that the checks of Caches that
		// joined at different times fall into the same rounds.
		if !c.due.After(now.Add(c.Every / 2)) {
			due = append(due, c)
			c.due = now.Add(c.Every)
		}
	}
	for _, c := range w.checks {
		byMarker[c.Marker] = append(byMarker[c.Marker], c)
	}
	w.mu.Unlock()

	// One marker write per marker, through the guard of its first Check
	// due; the markers of a guard go in one pipeline per node.
	var guards []*redisguard.Guard
	markers := map[*redisguard.Guard][]string{}
	seen := map[string]bool{}
	for _, c := range due {
		if seen[c.Marker] {
			continue
		}
		seen[c.Marker] = true
		if markers[c.Guard] == nil {
			guards = append(guards, c.Guard)
		}
		markers[c.Guard] = append(markers[c.Guard], c.Marker)
	}
	for _, g := range guards {
		for _, m := range w.write(ctx, g, markers[g]) {
			for _, c := range byMarker[m] {
				c.Empty()
			}
		}
	}

	next = time.Hour
	w.mu.Lock()
	for _, c := range w.checks {
		next = min(next, max(time.Until(c.due), 0))
	}
	w.mu.Unlock()
	return next
}

// write writes the markers with SET NX through g and returns those this
// process created.
func (w *Watcher) write(ctx context.Context, g *redisguard.Guard, markers []string) (created []string) {
	// Each write carries its own number, so that a write whose outcome
	// was lost (an error, or a call abandoned at the budget that may
	// still run) can be recognised later: the marker written at start-up
	// by this same process must not pass for it.
	w.seq++
	value := w.token + strconv.FormatUint(w.seq, 10)
	unsure := make([]uint64, len(markers))
	for i, m := range markers {
		unsure[i] = w.unsureFrom[m]
	}
	w.checked.Add(uint64(len(markers)))
	// The calls may outlive the guard's wait (an abandoned call on a
	// client that ignores deadlines): they read only these copies and
	// write only their own slots, which are read only when they completed.
	sets := make([]*redis.BoolCmd, len(markers))
	gets := make([]*redis.StringCmd, len(markers))
	errOf, _ := g.PerNode(ctx, markers, nil, func(ctx context.Context, idx []int) error {
		_, _ = g.Client().Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range idx {
				sets[i] = p.SetNX(ctx, markers[i], value, 0)
				if unsure[i] != 0 {
					// An earlier write failed on our side but may have run
					// on the server: if the marker is one of those, that
					// restart is ours to warm.
					gets[i] = p.Get(ctx, markers[i])
				}
			}
			return nil
		})
		for _, i := range idx {
			if err := sets[i].Err(); err != nil {
				return err
			}
			if gets[i] == nil {
				continue
			}
			if err := gets[i].Err(); err != nil && !errors.Is(err, redis.Nil) {
				return err // a GET of a marker deleted meanwhile is no error
			}
		}
		return nil
	}, nil)
	for i, m := range markers {
		switch err := errOf[i]; {
		case errors.Is(err, redisguard.ErrSkipped): // not sent
			continue
		case err != nil:
			if w.unsureFrom[m] == 0 {
				w.unsureFrom[m] = w.seq
			}
			continue
		}
		delete(w.unsureFrom, m)
		if w.ours(sets[i], gets[i], unsure[i]) {
			created = append(created, m)
		}
	}
	return created
}

// ours reports whether this process created a marker: its SET NX did, or
// it holds the value of one of its writes since unsureFrom.
func (w *Watcher) ours(set *redis.BoolCmd, get *redis.StringCmd, unsureFrom uint64) bool {
	if set.Val() {
		return true
	}
	if get == nil {
		return false
	}
	owner, err := get.Result()
	n, ok := strings.CutPrefix(owner, w.token)
	if err != nil || !ok {
		return false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	return err == nil && seq >= unsureFrom
}
