package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Adversarial tests of the clock's lease (internal/tagclock/lease.go):
// reader processes hammer Gets and GetManys while a writer process
// Clears or InvalidateTags in a loop, and every answer of a call that
// began after an invalidation returned is checked against the generation
// the database was at when that invalidation began.

// advDB is a database whose rows read as its generation, bumped before
// each invalidation: a value below the generation of an invalidation was
// loaded before it. Keys starting with "n" are not found while the
// generation is even. Every load is tagged "t".
type advDB struct {
	gen   atomic.Int64
	loads atomic.Int64
	// fail makes loads of keys starting with "s" fail (WithServeStale).
	fail atomic.Bool
}

func (d *advDB) load(ctx context.Context, key string) (string, error) {
	d.loads.Add(1)
	cacheaside.Tag(ctx, "t")
	g := d.gen.Load()
	if d.fail.Load() && strings.HasPrefix(key, "s") {
		return "", errors.New("advDB: down")
	}
	if strings.HasPrefix(key, "n") && g%2 == 0 {
		return "", cacheaside.ErrNotFound
	}
	return strconv.FormatInt(g, 10), nil
}

// advRound is one invalidation of the writer: the generation bumped just
// before it (at bumped) and when it returned nil.
type advRound struct {
	bumped   time.Time
	gen      int64
	returned time.Time
	failed   bool // the invalidation returned an error: it promises nothing
}

// advObs is one answer a reader got for key: began and ended are when its
// call did.
type advObs struct {
	began, ended time.Time
	key          string
	val          string
	notFound     bool
	many         bool
}

// advHistory collects rounds and observations.
type advHistory struct {
	mu     sync.Mutex
	rounds []advRound
	obs    []advObs
}

func (h *advHistory) observe(o advObs) {
	h.mu.Lock()
	h.obs = append(h.obs, o)
	h.mu.Unlock()
}

// check reports every answer of a call that began after round i
// returned and holds a value or a not-found answer loaded before round i.
func (h *advHistory) check(t *testing.T) (checked int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	bad := 0
	for _, o := range h.obs {
		// The last round that returned before the call began.
		i := -1
		for j := len(h.rounds) - 1; j >= 0; j-- {
			if !h.rounds[j].failed && h.rounds[j].returned.Before(o.began) {
				i = j
				break
			}
		}
		if i < 0 {
			continue
		}
		checked++
		r := h.rounds[i]
		// The largest generation the database may have had while the call
		// ran: that of the last bump begun before it ended.
		maxGen := r.gen
		for j := i + 1; j < len(h.rounds) && h.rounds[j].bumped.Before(o.ended); j++ {
			maxGen = h.rounds[j].gen
		}
		var msg string
		switch {
		case o.notFound:
			// Not found is an answer of an even generation in [gen, maxGen].
			if r.gen%2 != 0 && maxGen == r.gen {
				msg = fmt.Sprintf("not found, loaded at an even generation below %d", r.gen)
			}
		default:
			g, err := strconv.ParseInt(o.val, 10, 64)
			if err != nil {
				msg = fmt.Sprintf("value %q", o.val)
			} else if g < r.gen {
				msg = fmt.Sprintf("generation %d, want >= %d", g, r.gen)
			}
		}
		if msg != "" {
			bad++
			if bad <= 10 {
				t.Errorf("Get(%q) (many=%v) began %v after round %d returned (and lasted %v): %s",
					o.key, o.many, o.began.Sub(r.returned), i, o.ended.Sub(o.began), msg)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d answers checked were loaded before an invalidation that returned before their call began", bad, checked)
	}
	return checked
}

// advSetup says how a hammer run is set up.
type advSetup struct {
	tag      bool // InvalidateTag("t") rather than Clear
	opts     []cacheaside.Option
	busy     int           // goroutines of artificial CPU load (at most 2)
	readers  int           // reader processes
	lone     int           // goroutines of lone Gets per reader
	many     bool          // one goroutine of GetMany per reader
	stale    bool          // keys "s…" whose loads fail half the time
	dur      time.Duration // how long the writer runs
	pause    time.Duration // the most the writer sleeps between rounds
	clients  func(t *testing.T) redis.UniversalClient
	tamper   func()        // called in a loop beside the run, if set
	every    time.Duration // the pause between calls of tamper
	tolerate bool          // an invalidation may fail (Redis restarted)
}

// hammer runs s and checks its history.
func hammer(t *testing.T, s advSetup) {
	db := &advDB{}
	db.gen.Store(1)
	load := db.load
	var readers []*cacheaside.Cache[string, string]
	for range s.readers {
		readers = append(readers, newCacheOn(t, s.clients(t), load, s.opts...))
	}
	writer := newCacheOn(t, s.clients(t), load, s.opts...)
	ctx := testContext(t)
	var h advHistory

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range s.busy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := range 10000 {
					x += i
				}
				_ = x
			}
		}()
	}
	if s.tamper != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(s.every):
				}
				s.tamper()
			}
		}()
	}
	getLoop := func(c *cacheaside.Cache[string, string], keys []string) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[i%len(keys)]
			began := time.Now()
			v, err := c.Get(ctx, k)
			ended := time.Now()
			switch {
			case errors.Is(err, cacheaside.ErrNotFound):
				h.observe(advObs{began: began, ended: ended, key: k, notFound: true})
			case err != nil:
				if !strings.HasPrefix(k, "s") {
					t.Errorf("Get(%q) = %v", k, err)
					return
				}
			default:
				h.observe(advObs{began: began, ended: ended, key: k, val: v})
			}
			if i%7 == 0 {
				runtime.Gosched()
			}
		}
	}
	manyLoop := func(c *cacheaside.Cache[string, string], keys []string) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			began := time.Now()
			out, err := c.GetMany(ctx, keys)
			ended := time.Now()
			if err != nil && !s.stale {
				t.Errorf("GetMany = %v", err)
				return
			}
			for _, k := range keys {
				if v, ok := out[k]; ok {
					h.observe(advObs{began: began, ended: ended, key: k, val: v, many: true})
				} else if err == nil && strings.HasPrefix(k, "n") {
					h.observe(advObs{began: began, ended: ended, key: k, notFound: true, many: true})
				}
			}
		}
	}
	for r, c := range readers {
		for j := range s.lone {
			var keys []string
			for k := range 4 {
				keys = append(keys, fmt.Sprintf("k%d-%d-%d", r, j, k))
			}
			keys = append(keys, fmt.Sprintf("n%d-%d", r, j))
			if s.stale {
				keys = append(keys, fmt.Sprintf("s%d-%d", r, j))
			}
			wg.Add(1)
			go getLoop(c, keys)
		}
		if s.many {
			keys := []string{fmt.Sprintf("m%d-a", r), fmt.Sprintf("m%d-b", r), fmt.Sprintf("n%d-m", r)}
			wg.Add(1)
			go manyLoop(c, keys)
		}
	}

	// At least s.dur and minRounds rounds: on a loaded machine (CI runs
	// six shards beside other modules) a round can take a second, and a
	// run of one round checks too little. cap bounds it.
	const minRounds = 5
	deadline, hardDeadline := time.Now().Add(s.dur), time.Now().Add(60*time.Second)
	rounds := 0
	for i := 0; (time.Now().Before(deadline) || rounds < minRounds) && time.Now().Before(hardDeadline); i++ {
		if s.stale {
			db.fail.Store(i%2 == 1)
		}
		// Each reader's key "w<r>" is warm before the round, and read
		// right after it returned (after the round's record, below).
		for r, c := range readers {
			if _, err := c.Get(ctx, "w"+strconv.Itoa(r)); err != nil {
				t.Errorf("round %d: warm Get = %v", i, err)
			}
		}
		bumped := time.Now()
		gen := db.gen.Add(1)
		var err error
		if s.tag {
			err = writer.InvalidateTag(ctx, "t")
		} else {
			err = writer.Clear(ctx)
		}
		returned := time.Now()
		if err != nil && s.tolerate {
			h.mu.Lock()
			h.rounds = append(h.rounds, advRound{bumped: bumped, gen: gen, failed: true})
			h.mu.Unlock()
			continue
		}
		if err != nil {
			t.Errorf("round %d: invalidation = %v", i, err)
			break
		}
		h.mu.Lock()
		h.rounds = append(h.rounds, advRound{bumped: bumped, gen: gen, returned: returned})
		h.mu.Unlock()
		rounds++
		for r, c := range readers {
			k := "w" + strconv.Itoa(r)
			began := time.Now()
			v, err := c.Get(ctx, k)
			if err != nil {
				t.Errorf("round %d: Get(%q) after = %v", i, k, err)
				continue
			}
			h.observe(advObs{began: began, ended: time.Now(), key: k, val: v})
		}
		if s.pause > 0 {
			time.Sleep(time.Duration(i%5) * s.pause / 4)
		}
	}
	close(stop)
	wg.Wait()
	checked := h.check(t)
	t.Logf("%d rounds, %d answers checked, %d loads", rounds, checked, db.loads.Load())
	if checked < 100 {
		t.Errorf("only %d answers checked: the run proves nothing", checked)
	}
}

func singleClients(srv *redistest.Server) func(t *testing.T) redis.UniversalClient {
	return func(t *testing.T) redis.UniversalClient { return srv.Client(t) }
}

// TestAdvLeaseCrossProcessHammer: three reader processes (lone Gets
// batched with each other, a GetMany, not-found answers) against a writer
// that Clears or InvalidateTags as fast as it can.
func TestAdvLeaseCrossProcessHammer(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    advSetup
	}{
		{"clear", advSetup{}},
		{"tag", advSetup{tag: true}},
		{"clear-busy", advSetup{busy: 2}},
		{"tag-l1-sync", advSetup{tag: true, opts: []cacheaside.Option{cacheaside.WithL1(cacheaside.L1{}), cacheaside.WithSyncInvalidation(5 * time.Second)}}},
		{"clear-l1-sync-busy", advSetup{busy: 2, opts: []cacheaside.Option{cacheaside.WithL1(cacheaside.L1{}), cacheaside.WithSyncInvalidation(5 * time.Second)}}},
		{"clear-l1-outageonly", advSetup{opts: []cacheaside.Option{cacheaside.WithL1(cacheaside.L1{OutageOnly: true})}}},
		{"clear-refresh", advSetup{opts: []cacheaside.Option{cacheaside.WithTTL(30 * time.Millisecond), cacheaside.WithEarlyRefresh(4)}}},
		{"clear-stale", advSetup{stale: true, opts: []cacheaside.Option{cacheaside.WithTTL(5 * time.Millisecond), cacheaside.WithServeStale(cacheaside.ServeStale{MaxStale: time.Minute})}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			s := tc.s
			s.clients = singleClients(srv)
			s.readers, s.lone, s.many = 3, 2, true
			s.dur, s.pause = time.Second, 2*time.Millisecond
			hammer(t, s)
		})
	}
}

// TestAdvLeaseClusterHammer: the hammer on a Redis Cluster, where a read
// carries its node's clock replica, a held lease carries none, and a
// lease held by a read of one node covers the reads of the others.
func TestAdvLeaseClusterHammer(t *testing.T) {
	cl := redistest.StartCluster(t)
	for _, tc := range []struct {
		name string
		s    advSetup
	}{
		{"clear", advSetup{}},
		{"tag-busy", advSetup{tag: true, busy: 2}},
		{"clear-l1-sync", advSetup{opts: []cacheaside.Option{cacheaside.WithL1(cacheaside.L1{}), cacheaside.WithSyncInvalidation(5 * time.Second)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.opts = append(s.opts, cacheaside.WithPrefix(tc.name+":"))
			s.clients = func(t *testing.T) redis.UniversalClient { return cl.Client(t) }
			s.readers, s.lone, s.many = 3, 2, true
			s.dur, s.pause = time.Second, 2*time.Millisecond
			hammer(t, s)
		})
	}
}

// TestAdvLeaseClockLostDuringLease: the hammer while the clock key is
// deleted every few milliseconds (a lost clock, recreated by the first
// read that finds it missing, which extends the lease it holds), or
// overwritten with bytes that are no clock.
func TestAdvLeaseClockLostDuringLease(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tag    bool
		busy   int
		tamper []string
	}{
		{"del-clear", false, 0, []string{"DEL", "ca:{tags}:clock"}},
		{"del-tag", true, 0, []string{"DEL", "ca:{tags}:clock"}},
		{"del-tagkey", true, 0, []string{"DEL", "ca:{tags}:t:t"}},
		{"del-clear-busy", false, 2, []string{"DEL", "ca:{tags}:clock"}},
		{"corrupt-clear", false, 0, []string{"SET", "ca:{tags}:clock", "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := srv.Client(t)
			s := advSetup{tag: tc.tag, busy: tc.busy}
			s.clients = singleClients(srv)
			s.readers, s.lone, s.many = 3, 2, true
			s.dur, s.pause = time.Second, 2*time.Millisecond
			s.every = 700 * time.Microsecond
			args := make([]any, len(tc.tamper))
			for i, a := range tc.tamper {
				args[i] = a
			}
			s.tamper = func() { _ = rdb.Do(context.Background(), args...).Err() }
			hammer(t, s)
		})
	}
}

// TestAdvLeaseRestartFromOlderSnapshot: the hammer while Redis is
// restarted every few hundred milliseconds, alternately empty and from a
// snapshot taken a few rounds before (values and a clock older than the
// Clears made since: a set-back clock that every process knew past).
func TestAdvLeaseRestartFromOlderSnapshot(t *testing.T) {
	srv := redistest.Start(t)
	var n atomic.Int64
	s := advSetup{tolerate: true}
	s.clients = singleClients(srv)
	s.readers, s.lone, s.many = 2, 2, true
	s.dur, s.pause = 2*time.Second, 2*time.Millisecond
	s.every = 150 * time.Millisecond
	s.tamper = func() {
		switch n.Add(1) % 3 {
		case 0:
			_ = srv.Client(t).Do(context.Background(), "SAVE").Err()
		case 1:
			srv.Restart() // from the snapshot
		case 2:
			_ = srv.Client(t).Do(context.Background(), "SAVE").Err()
			srv.Restart()
			_ = srv.Client(t).Do(context.Background(), "FLUSHALL").Err()
		}
	}
	hammer(t, s)
}
