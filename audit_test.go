package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Tests of the consistency auditor (WithAudit, audit.go): what it finds,
// what it does not, its rate cap and sampling fraction, and how it fails.

// auditSource is a source of truth for the auditor's tests: a map of rows
// whose loader counts its calls; keys absent are not found. Changes take
// the write lock, so that a load never sees half of a change.
type auditSource struct {
	mu    sync.RWMutex
	rows  map[string]string
	calls atomic.Int64
	// hook, if set, runs at the start of every load after the first
	// (the audits, in tests whose keys load once).
	hook func(ctx context.Context) error
}

func (s *auditSource) load(ctx context.Context, k string) (string, error) {
	if n := s.calls.Add(1); n > 1 && s.hook != nil {
		if err := s.hook(ctx); err != nil {
			return "", err
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.rows[k]
	if !ok {
		return "", fmt.Errorf("row %q: %w", k, cacheaside.ErrNotFound)
	}
	return v, nil
}

func (s *auditSource) set(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows[k] = v
}

func sameString(cached, fresh string) bool { return cached == fresh }

// hitLoop Gets keys round robin on n goroutines until stop is closed.
func hitLoop(ctx context.Context, c *cacheaside.Cache[string, string], n int, keys []string, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = c.Get(ctx, keys[i%len(keys)])
			}
		}()
	}
	return &wg
}

// TestAuditFindsUnInvalidatedChange: a row changed in the source without
// an Invalidate is found stale, with an age close to the time since the
// cached value's load, on hits of Get and of GetMany and on a Cluster; the
// auditor neither counts its loads as Loads nor writes (the old value is
// still served), and it logs the finding.
func TestAuditFindsUnInvalidatedChange(t *testing.T) {
	get := func(ctx context.Context, c *cacheaside.Cache[string, string], k string) (string, error) {
		return c.Get(ctx, k)
	}
	getMany := func(ctx context.Context, c *cacheaside.Cache[string, string], k string) (string, error) {
		m, err := c.GetMany(ctx, []string{k})
		return m[k], err
	}
	for _, tt := range []struct {
		name    string
		cluster bool
		get     func(context.Context, *cacheaside.Cache[string, string], string) (string, error)
	}{
		{"Get", false, get},
		{"GetMany", false, getMany},
		{"Cluster", true, get},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rdb redis.UniversalClient
			if tt.cluster {
				rdb = redistest.StartCluster(t).Client(t)
			} else {
				rdb = redistest.Start(t).Client(t)
			}
			ctx := testContext(t)
			src := &auditSource{rows: map[string]string{"k": "v1"}}
			var logs syncBuffer
			c := newCacheOn(t, rdb, src.load, cacheaside.WithAudit(1, sameString),
				cacheaside.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			mustRead := func(what string) {
				t.Helper()
				if v, err := tt.get(ctx, c, "k"); err != nil || v != "v1" {
					t.Fatalf("%s: read(k) = %q, %v; want \"v1\"", what, v, err)
				}
			}

			before := time.Now()
			mustRead("first read")
			const wait = 300 * time.Millisecond
			time.Sleep(wait)
			src.set("k", "v2") // no Invalidate
			for deadline := time.Now().Add(waitLimit); c.Stats().AuditStale == 0 && time.Now().Before(deadline); {
				mustRead("read after the change") // the auditor only measures
				time.Sleep(10 * time.Millisecond)
			}
			// The auditor counts a finding before it records its age and
			// logs it (ci3: "log = \"\"" read right after AuditStale
			// became 1): wait for the warning, then read the Stats.
			waitFor(t, waitLimit, "the auditor's warning", func() bool { return strings.Contains(logs.String(), "level=WARN") })
			s := c.Stats()
			upper := time.Since(before) + 2*time.Millisecond // the stored time has ms precision
			if s.AuditStale == 0 || s.AuditStale > s.AuditChecks {
				t.Fatalf("Stats = %+v, want 0 < AuditStale <= AuditChecks", s)
			}
			if s.AuditOldestStale < wait || s.AuditOldestStale > upper {
				t.Errorf("AuditOldestStale = %v, want in [%v, %v] (the time since the load)", s.AuditOldestStale, wait, upper)
			}
			if s.Loads != 1 {
				t.Errorf("Stats.Loads = %d, want 1: audit loads are not loads", s.Loads)
			}
			if n := src.calls.Load(); n < 2 {
				t.Errorf("loader calls = %d, want the first load and at least one audit", n)
			}
			mustRead("read after the finding")
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "key=ca:{k}") {
				t.Errorf("log = %q, want a warning naming the key", logs.String())
			}
			t.Logf("%d of %d sampled hits were stale; the oldest was %v old", s.AuditStale, s.AuditChecks, s.AuditOldestStale)
		})
	}
}

// TestAuditNoFindingWhenUnchanged: values that match the source, "not
// found" on both sides, and changes made with an Invalidate are no
// findings.
func TestAuditNoFindingWhenUnchanged(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	src := &auditSource{rows: map[string]string{"a": "1", "b": "1"}}
	c := newCache(t, srv, src.load, cacheaside.WithAudit(1, sameString))

	stop := make(chan struct{})
	wg := hitLoop(ctx, c, 2, []string{"a", "b", "gone"}, stop)
	// Change b through the cache's promise: the source and the Invalidate
	// in one step for the loads, every 50ms.
	for i := range 20 {
		time.Sleep(50 * time.Millisecond)
		src.mu.Lock()
		src.rows["b"] = fmt.Sprint(i + 2)
		err := c.Invalidate(ctx, "b")
		src.mu.Unlock()
		if err != nil {
			t.Fatalf("Invalidate(b) = %v", err)
		}
	}
	waitFor(t, waitLimit, "20 audit checks", func() bool { return c.Stats().AuditChecks >= 20 })
	close(stop)
	wg.Wait()
	if s := c.Stats(); s.AuditStale != 0 || s.AuditErrors != 0 || s.AuditOldestStale != 0 {
		t.Errorf("Stats = %+v, want no stale value and no error", s)
	}
}

// TestAuditRateCap: with every hit sampled and a hot loop of hits for
// two seconds, the auditor starts at most 10 loads a second plus a burst
// of 10, and counts the samples it dropped.
func TestAuditRateCap(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	src := &auditSource{rows: map[string]string{"a": "1", "b": "2", "c": "3"}}
	c := newCache(t, srv, src.load, cacheaside.WithAudit(1, sameString))
	keys := []string{"a", "b", "c"}
	for _, k := range keys {
		if _, err := c.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	loads := src.calls.Load()
	start := time.Now()
	stop := make(chan struct{})
	wg := hitLoop(ctx, c, 4, keys, stop)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	// Samples queued before the stop may still be audited: they were
	// admitted by the limiter within the loop.
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	audits := src.calls.Load() - loads
	s := c.Stats()
	limit := int64(10*elapsed.Seconds()) + 10 + 1
	if audits > limit {
		t.Errorf("audit loads in %v = %d, want at most %d (10/s + a burst of 10)", elapsed, audits, limit)
	}
	if audits == 0 || s.AuditDropped == 0 {
		t.Errorf("audit loads = %d, Stats = %+v: want audits and dropped samples", audits, s)
	}
	if s.Hits < uint64(audits)+s.AuditDropped {
		t.Errorf("Stats = %+v, audits %d: want no more samples than hits", s, audits)
	}
	t.Logf("%d hits, %d audit loads, %d samples dropped in %v", s.Hits, audits, s.AuditDropped, elapsed)
}

// TestAuditFraction: the share of hits sampled is about the fraction.
func TestAuditFraction(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	src := &auditSource{rows: map[string]string{"a": "1"}}
	c := newCache(t, srv, src.load, cacheaside.WithAudit(0.1, sameString))
	const n = 3000
	for range n {
		if _, err := c.Get(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// Every sample is checked, dropped, or still queued (at most 16 and
	// one in flight).
	s := c.Stats()
	sampled := float64(s.AuditChecks + s.AuditDropped + s.AuditErrors)
	hits := float64(s.Hits)
	if lo, hi := 0.05*hits-17, 0.15*hits; sampled < lo || sampled > hi {
		t.Errorf("%v samples of %v hits, want about 10%%: in [%v, %v]", sampled, hits, lo, hi)
	}
}

// TestAuditBadOptions: New rejects a fraction outside (0, 1], a nil
// comparison and one of another value type, naming WithAudit.
func TestAuditBadOptions(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	load := func(context.Context, string) (string, error) { return "", nil }
	for name, opt := range map[string]cacheaside.Option{
		"zero":     cacheaside.WithAudit(0, sameString),
		"negative": cacheaside.WithAudit(-0.5, sameString),
		"above 1":  cacheaside.WithAudit(1.01, sameString),
		"NaN":      cacheaside.WithAudit(math.NaN(), sameString),
		"nil":      cacheaside.WithAudit[string](0.5, nil),
		"type":     cacheaside.WithAudit(0.5, func(cached, fresh int) bool { return cached == fresh }),
	} {
		c, err := cacheaside.New(rdb, load, opt)
		if err == nil {
			c.Close()
			t.Errorf("%s: New = nil error, want one naming WithAudit", name)
		} else if !strings.Contains(err.Error(), "WithAudit") {
			t.Errorf("%s: New = %v, want an error naming WithAudit", name, err)
		}
	}
	c, err := cacheaside.New(rdb, load, cacheaside.WithAudit(1, sameString))
	if err != nil {
		t.Fatalf("New(WithAudit(1, ...)) = %v, want nil", err)
	}
	c.Close()
}

// TestAuditCloseWithLoadInFlight: Close cancels an audit load that waits
// on its context and returns; the load is not an audit error.
func TestAuditCloseWithLoadInFlight(t *testing.T) {
	srv := redistest.Start(t)
	started := make(chan struct{}, 1)
	src := &auditSource{rows: map[string]string{"k": "v"}, hook: func(ctx context.Context) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	c, err := cacheaside.New(srv.Client(t), src.load, cacheaside.WithAudit(1, sameString), cacheaside.WithRedisTimeout(redisTimeout))
	if err != nil {
		t.Fatal(err)
	}
	mustGetValue(t, c, "k", "v", "first Get")
	mustGetValue(t, c, "k", "v", "a hit, audited")
	await(t, started, "the audit load")
	for range 50 {
		mustGetValue(t, c, "k", "v", "a hit while the audit load hangs") // never blocked by it
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if err := await(t, closed, "Close with an audit load in flight"); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	if s := c.Stats(); s.AuditErrors != 0 || s.AuditChecks != 0 {
		t.Errorf("Stats = %+v, want no check and no error: the audit was stopped", s)
	}
}

// TestAuditLoaderPanic: a loader that panics or fails in an audit, and a
// comparison that panics, are counted as audit errors; Gets go on.
func TestAuditLoaderPanic(t *testing.T) {
	for _, tt := range []struct {
		name string
		hook func(context.Context) error
		same func(cached, fresh string) bool
	}{
		{"loader panics", func(context.Context) error { panic("audit boom") }, sameString},
		{"loader fails", func(context.Context) error { return errors.New("db down") }, sameString},
		{"same panics", nil, func(cached, fresh string) bool { panic("compare boom") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			src := &auditSource{rows: map[string]string{"k": "v"}, hook: tt.hook}
			c := newCache(t, srv, src.load, cacheaside.WithAudit(1, tt.same))
			mustGetValue(t, c, "k", "v", "first Get")
			for deadline := time.Now().Add(waitLimit); c.Stats().AuditErrors < 3 && time.Now().Before(deadline); {
				mustGetValue(t, c, "k", "v", "a hit")
				time.Sleep(20 * time.Millisecond)
			}
			s := c.Stats()
			if s.AuditErrors < 3 || s.AuditChecks != 0 || s.AuditStale != 0 {
				t.Errorf("Stats = %+v, want at least 3 audit errors and no check", s)
			}
			if s.Loads != 1 || s.LoadErrors != 0 || s.Panics != 0 {
				t.Errorf("Stats = %+v, want the one load and no load error: audits are counted apart", s)
			}
		})
	}
}

// TestAuditNoFreeLoadSlot: while every load slot is taken by a real load,
// sampled hits are dropped (counted), not audited and not waited for.
func TestAuditNoFreeLoadSlot(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	release := make(chan struct{})
	loading := make(chan struct{})
	var audits atomic.Int64
	load := func(ctx context.Context, k string) (string, error) {
		if k == "slow" {
			close(loading)
			<-release
			return "s", nil
		}
		if audits.Add(1) > 1 {
			t.Errorf("loader called again for %q while its one slot was busy", k)
		}
		return "v", nil
	}
	c := newCache(t, srv, load, cacheaside.WithAudit(1, sameString), cacheaside.WithMaxConcurrentLoads(1))
	mustGetValue(t, c, "k", "v", "first Get")
	slow := getAsync(ctx, c, "slow")
	await(t, loading, "the slow load")
	for deadline := time.Now().Add(waitLimit); c.Stats().AuditDropped < 3 && time.Now().Before(deadline); {
		mustGetValue(t, c, "k", "v", "a hit while the slot is busy")
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	if o := await(t, slow, "the slow Get"); o.err != nil {
		t.Errorf("Get(slow) = %v", o.err)
	}
	if s := c.Stats(); s.AuditDropped < 3 || s.AuditChecks != 0 || s.AuditErrors != 0 {
		t.Errorf("Stats = %+v, want at least 3 dropped samples, no check and no error", s)
	}
}

// TestAuditNoFindingAfterClear: a value that a Clear or an InvalidateTag
// (on another process) made a miss while its audit was loading is no
// longer served: the change reached the cache through its promise, so it
// is no finding, as after an Invalidate.
func TestAuditNoFindingAfterClear(t *testing.T) {
	for _, how := range []string{"Clear", "InvalidateTag"} {
		t.Run(how, func(t *testing.T) {
			srv := redistest.Start(t)
			ctx := testContext(t)
			entered, release := make(chan struct{}), make(chan struct{})
			src := &auditSource{rows: map[string]string{"a": "1"}}
			src.hook = func(ctx context.Context) error {
				entered <- struct{}{}
				<-release
				return nil
			}
			load := func(ctx context.Context, k string) (string, error) {
				cacheaside.Tag(ctx, "t")
				return src.load(ctx, k)
			}
			c := newCache(t, srv, load, cacheaside.WithAudit(1, sameString))
			other := newCache(t, srv, load)
			mustGetValue(t, c, "a", "1", "warm")
			mustGetValue(t, c, "a", "1", "the hit audited")
			await(t, entered, "the audit's load")
			src.set("a", "2")
			var err error
			if how == "Clear" {
				err = other.Clear(ctx)
			} else {
				err = other.InvalidateTag(ctx, "t")
			}
			if err != nil {
				t.Fatalf("%s() = %v, want nil", how, err)
			}
			close(release)
			waitFor(t, waitLimit, "the audit check", func() bool { return c.Stats().AuditChecks >= 1 })
			if s := c.Stats(); s.AuditStale != 0 {
				t.Errorf("Stats.AuditStale = %d after a %s, want 0 (the value is no longer served)", s.AuditStale, how)
			}
		})
	}
}
