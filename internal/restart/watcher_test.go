package restart

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// The shared restart watcher against a real redis-server: one round trip
// per check for every marker of the client, each marker's Checks told
// when this process finds it missing, and no goroutine left after the
// last Check leaves (goleak).

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 10 * time.Second

// markerCalls counts, installed as redistest.RoundTrips(h.count), the round trips that carry marker
// writes (SET NX) and the writes in them.
type markerCalls struct {
	mu     sync.Mutex
	trips  int   // round trips (single commands or pipelines) with marker writes
	setnx  int   // marker writes
	perTrp []int // marker writes per round trip, in order
}

func (h *markerCalls) count(cmds []redis.Cmder) {
	n := 0
	for _, c := range cmds {
		if isMarkerWrite(c) {
			n++
		}
	}
	if n == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trips++
	h.setnx += n
	h.perTrp = append(h.perTrp, n)
}

// isMarkerWrite reports whether cmd is a SET NX of a marker.
func isMarkerWrite(cmd redis.Cmder) bool {
	a := cmd.Args()
	key, _ := a[len(a)-min(len(a), 3)].(string)
	return cmd.Name() == "set" && a[len(a)-1] == "nx" && strings.HasSuffix(key, "warm-marker")
}

// snapshot returns the counts and forgets the per-trip list.
func (h *markerCalls) snapshot() (trips, setnx int, perTrip []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.perTrp
	h.perTrp = nil
	return h.trips, h.setnx, p
}

func newGuard(t *testing.T, rdb *redis.Client) *redisguard.Guard {
	t.Helper()
	g := redisguard.New(redisguard.Config{Client: rdb, Budget: 5 * time.Second, Limit: 5 * time.Second, MaxAbandoned: 8})
	t.Cleanup(g.Close)
	return g
}

// empties counts the Empty calls of one Check.
type empties struct{ n atomic.Int64 }

// waitUntil waits until cond holds, for at most waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	redistest.WaitFor(t, waitLimit, what, cond)
}

// joinTen joins ten Checks on rdb, each with its own marker, or one marker
// for all when sameMarker, and waits until the markers exist and the
// Check of each marker that found it missing was told so (a new server has
// no marker; a Check that joins a marker already written is not told).
func joinTen(t *testing.T, srv *redistest.Server, rdb *redis.Client, g *redisguard.Guard, every time.Duration, sameMarker bool) []*empties {
	t.Helper()
	var es []*empties
	markers := map[string]bool{}
	for i := range 10 {
		e := &empties{}
		es = append(es, e)
		marker := fmt.Sprintf("p%d:warm-marker", i)
		if sameMarker {
			marker = "p:warm-marker"
		}
		markers[marker] = true
		_, leave := Join(rdb, &Check{Guard: g, Marker: marker, Every: every, Empty: func() { e.n.Add(1) }})
		t.Cleanup(leave)
	}
	waitUntil(t, "the markers written, and their creation told", func() bool {
		told := int64(0)
		for _, e := range es {
			told += e.n.Load()
		}
		return srv.CLI(t, append([]string{"EXISTS"}, slices.Collect(maps.Keys(markers))...)...) == strconv.Itoa(len(markers)) && told >= int64(len(markers))
	})
	return es
}

// TestWatcherOneRoundTripPerCheck: ten Checks on one client, with one
// interval, cost one round trip per interval that writes the ten markers,
// not ten.
func TestWatcherOneRoundTripPerCheck(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	calls := &markerCalls{}
	rdb.AddHook(redistest.RoundTrips(calls.count))
	const every = 50 * time.Millisecond
	joinTen(t, srv, rdb, newGuard(t, rdb), every, false)

	time.Sleep(3 * every) // the checks joined at different times fall into one round
	calls.snapshot()
	const window = 1 * time.Second
	time.Sleep(window)
	trips, _, perTrip := calls.snapshot()
	if len(perTrip) == 0 {
		t.Fatalf("no marker check in %v with a %v interval", window, every)
	}
	for i, n := range perTrip {
		if n != 10 {
			t.Errorf("round trip %d of %d wrote %d markers, want all 10 in one", i, len(perTrip), n)
		}
	}
	// At most one round trip per interval (with one for a tick that ran
	// late); a loaded machine makes fewer.
	if max := int(window/every) + 2; len(perTrip) > max {
		t.Errorf("%d marker round trips in %v with a %v interval (total %d), want at most %d", len(perTrip), window, every, trips, max)
	}
}

// TestWatcherFlushTellsEveryCheck: after FLUSHALL, every Check is told,
// also those that share a marker.
func TestWatcherFlushTellsEveryCheck(t *testing.T) {
	for _, same := range []bool{false, true} {
		t.Run(fmt.Sprintf("sameMarker=%v", same), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := srv.Client(t)
			es := joinTen(t, srv, rdb, newGuard(t, rdb), 20*time.Millisecond, same)
			base := make([]int64, len(es))
			for i, e := range es {
				base[i] = e.n.Load()
			}
			srv.CLI(t, "FLUSHALL")
			waitUntil(t, "every Check told of the flush", func() bool {
				for i, e := range es {
					if e.n.Load() <= base[i] {
						return false
					}
				}
				return true
			})
			time.Sleep(100 * time.Millisecond) // five more checks: the marker is there
			for i, e := range es {
				if n := e.n.Load(); n != base[i]+1 {
					t.Errorf("Check %d told %d times of an empty Redis, want %d (%d before the FLUSHALL, then once)", i, n, base[i]+1, base[i])
				}
			}
		})
	}
}

// TestWatcherNudge: a Check with a long interval is checked at once when
// nudged.
func TestWatcherNudge(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	e := &empties{}
	c := &Check{Guard: newGuard(t, rdb), Marker: "n:warm-marker", Every: time.Hour, Empty: func() { e.n.Add(1) }}
	w, leave := Join(rdb, c)
	defer leave()
	waitUntil(t, "the first check", func() bool { return e.n.Load() == 1 })
	srv.CLI(t, "FLUSHALL")
	before := w.Checked()
	c.Nudge()
	waitUntil(t, "the nudged check finds the flush", func() bool { return e.n.Load() == 2 })
	if w.Checked() != before+1 {
		t.Errorf("Checked() = %d after one nudge, want %d", w.Checked(), before+1)
	}
}

// TestWatcherLostWriteIsRecognised: a marker write whose reply was lost
// (the connection cut after Redis ran it) is recognised as this
// process's on the next check, so the restart is still warmed.
func TestWatcherLostWriteIsRecognised(t *testing.T) {
	srv := redistest.Start(t)
	var cut atomic.Bool
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(lostReply{cut: &cut})
	e := &empties{}
	c := &Check{Guard: newGuard(t, rdb), Marker: "l:warm-marker", Every: 20 * time.Millisecond, Empty: func() { e.n.Add(1) }}
	cut.Store(true) // the first write runs, its reply is lost
	_, leave := Join(rdb, c)
	defer leave()
	waitUntil(t, "the lost write is recognised as ours", func() bool { return e.n.Load() == 1 })
	if v := srv.CLI(t, "EXISTS", "l:warm-marker"); v != "1" {
		t.Errorf("EXISTS marker = %s, want 1", v)
	}
}

// lostReply lets the first pipeline run on the server and then fails it
// as if the connection dropped before the reply.
type lostReply struct{ cut *atomic.Bool }

func (lostReply) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.cut.CompareAndSwap(true, false) {
			err = &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
			for _, c := range cmds {
				c.SetErr(err)
			}
		}
		return err
	}
}
