package inspect_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/inspect"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type item struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// loadItem knows every id but 404, which does not exist.
func loadItem(ctx context.Context, id int64) (item, error) {
	cacheaside.Tag(ctx, "items")
	if id == 404 {
		return item{}, fmt.Errorf("item %d: %w", id, cacheaside.ErrNotFound)
	}
	return item{ID: id, Name: "item-" + strconv.FormatInt(id, 10)}, nil
}

// rig is a cache on a redis-server of its own, its inspector served by
// httptest, and a client for raw writes.
type rig struct {
	cache *cacheaside.Cache[int64, item]
	rdb   redis.UniversalClient
	srv   *httptest.Server
}

func newRig(t *testing.T, rdb redis.UniversalClient, load cacheaside.LoadFunc[int64, item], opts ...cacheaside.Option) *rig {
	t.Helper()
	opts = append([]cacheaside.Option{cacheaside.WithRedisTimeout(5 * time.Second)}, opts...)
	c, err := cacheaside.New(rdb, load, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h, err := inspect.New(rdb, c, nil)
	if err != nil {
		t.Fatalf("inspect.New: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &rig{cache: c, rdb: rdb, srv: srv}
}

func newServerRig(t *testing.T, load cacheaside.LoadFunc[int64, item], opts ...cacheaside.Option) *rig {
	t.Helper()
	s := redistest.Start(t)
	return newRig(t, s.Client(t), load, opts...)
}

// report GETs the JSON report of key ("" for none).
func (r *rig) report(t *testing.T, key string) inspect.Report {
	t.Helper()
	q := url.Values{"format": {"json"}}
	if key != "" {
		q.Set("key", key)
	}
	resp, body := do(t, http.MethodGet, r.srv.URL+"?"+q.Encode(), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET ?%s = %d %s, want 200", q.Encode(), resp.StatusCode, body)
	}
	var rep inspect.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("GET ?%s: decoding %s: %v", q.Encode(), body, err)
	}
	return rep
}

// do sends one request and returns the response and its body, without
// following redirects.
func do(t *testing.T, method, u string, body io.Reader, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return resp, string(b)
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestEntryDecoded stores a value and a not-found answer through the
// cache and checks every field the inspector decodes.
func TestEntryDecoded(t *testing.T) {
	r := newServerRig(t, loadItem, cacheaside.WithTTL(time.Minute), cacheaside.WithJitter(0))
	ctx := ctxFor(t)
	if _, err := r.cache.Get(ctx, 7); err != nil {
		t.Fatalf("Get(7) = %v", err)
	}
	rep := r.report(t, "7")
	e := rep.Entry
	if e == nil {
		t.Fatalf("report of key 7 has no entry: %+v", rep)
	}
	if e.RedisKey != r.cache.RedisKey(7) || e.Error != "" {
		t.Errorf("entry redis key %q, error %q; want %q and none", e.RedisKey, e.Error, r.cache.RedisKey(7))
	}
	v := e.Value
	if !v.Exists || v.Type != "string" || v.Unreadable != "" || v.Envelope == nil {
		t.Fatalf("value = %+v, want a readable string entry with an envelope", v)
	}
	if v.Envelope.Version != 1 || v.Envelope.NotFound || v.Envelope.Stale {
		t.Errorf("envelope = %+v, want version 1, a value, not stale", v.Envelope)
	}
	if left := v.Envelope.ExpiresInMs; left <= 0 || left > 60_000 {
		t.Errorf("logical expiry in %d ms, want in (0, 60000]", left)
	}
	if v.PTTLMs <= 0 || v.PTTLMs > 60_000 {
		t.Errorf("PTTL = %d ms, want in (0, 60000]", v.PTTLMs)
	}
	if v.Envelope.LoadTimeMs < 0 {
		t.Errorf("load time = %v ms, want ≥ 0", v.Envelope.LoadTimeMs)
	}
	if v.Envelope.Stored == "" || v.Envelope.AgeMs < 0 || v.Envelope.AgeMs > 60_000 {
		t.Errorf("stored %q, age %d ms; want a time and an age in [0, 60000]", v.Envelope.Stored, v.Envelope.AgeMs)
	}
	if len(v.Envelope.Tags) != 1 || v.Envelope.Tags[0] != "items" {
		t.Errorf("tags = %q, want [items] (loadItem's Tag)", v.Envelope.Tags)
	}
	if v.Payload != `{"id":7,"name":"item-7"}` {
		t.Errorf("payload = %q, want the JSON of item 7", v.Payload)
	}
	if e.Lock.Exists {
		t.Errorf("lock = %+v after the fill, want free", e.Lock)
	}
	if !e.Generation.Exists || e.Generation.Value == "" || e.Generation.PTTLMs <= 0 {
		t.Errorf("generation = %+v, want one with a TTL (the fill lock created it)", e.Generation)
	}
	if rep.Stats.Loads != 1 || rep.Stats.Misses != 1 {
		t.Errorf("stats = %+v, want the 1 load and 1 miss of Get(7)", rep.Stats)
	}
	if len(rep.Breakers) != 1 || rep.Breakers[""] != cacheaside.BreakerClosed {
		t.Errorf("breakers = %v, want {\"\": closed}", rep.Breakers)
	}
	if s := r.cache.Stats(); s.Hits != 0 || s.Loads != 1 {
		t.Errorf("Stats() after inspecting = %+v, want the inspector not to read through the cache", s)
	}

	if _, err := r.cache.Get(ctx, 404); !errors.Is(err, cacheaside.ErrNotFound) {
		t.Fatalf("Get(404) = %v, want ErrNotFound", err)
	}
	if v := r.report(t, "404").Entry.Value; v.Envelope == nil || !v.Envelope.NotFound || v.Payload != "" {
		t.Errorf("value of 404 = %+v, want a not-found marker with no payload", v)
	}
	if v := r.report(t, "8").Entry.Value; v.Exists {
		t.Errorf("value of 8, never read = %+v, want none", v)
	}
}

// TestEntryFingerprint checks that the inspector shows the fingerprint of
// the value type and codec of the cache that wrote an entry, and whether
// it is the inspected cache's: an entry of this cache matches; one written
// by a cache of another value type under the same key does not (the
// inspected cache reads it as a miss); a v0.1 entry has none and matches.
func TestEntryFingerprint(t *testing.T) {
	s := redistest.Start(t)
	rdb := s.Client(t)
	r := newRig(t, rdb, loadItem)
	ctx := ctxFor(t)
	if _, err := r.cache.Get(ctx, 1); err != nil {
		t.Fatalf("Get(1) = %v", err)
	}
	own := fmt.Sprintf("%08x", r.cache.TypeFingerprint())
	if env := r.report(t, "1").Entry.Value.Envelope; env == nil || env.Fingerprint != own || env.CacheFingerprint != own || !env.TypeMatches {
		t.Errorf("envelope of the cache's own entry = %+v, want fingerprint %s, matching", env, own)
	}

	// A cache of strings on the same client and the default prefix.
	other, err := cacheaside.New(rdb, func(_ context.Context, id int64) (string, error) { return "s", nil })
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer other.Close()
	if _, err := other.Get(ctx, 2); err != nil {
		t.Fatalf("other.Get(2) = %v", err)
	}
	v := r.report(t, "2").Entry.Value
	if env := v.Envelope; env == nil || env.Fingerprint != fmt.Sprintf("%08x", other.TypeFingerprint()) || env.CacheFingerprint != own || env.TypeMatches {
		t.Errorf("envelope of an entry of a cache of strings = %+v, want its fingerprint, this cache's %s, not matching", env, own)
	}
	if v.Unreadable != "another value type or codec" {
		t.Errorf("unreadable = %q for another cache's entry, want %q", v.Unreadable, "another value type or codec")
	}
	resp, body := do(t, http.MethodGet, r.srv.URL+"?key=2", nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "another value type or codec") || !strings.Contains(body, own) {
		t.Errorf("GET ?key=2 (HTML) = %d, want 200 naming the mismatch and this cache's fingerprint %s:\n%s", resp.StatusCode, own, body)
	}

	// A v0.1 entry: no fingerprint.
	old := envelope.Append(nil, envelope.Header{Expiry: time.Now().Add(time.Minute)}, []byte(`{"id":3}`))
	if err := rdb.Set(ctx, r.cache.RedisKey(3), old, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if env := r.report(t, "3").Entry.Value.Envelope; env == nil || env.Fingerprint != "" || !env.TypeMatches {
		t.Errorf("envelope of a v0.1 entry = %+v, want no fingerprint, matching", env)
	}
}

// TestUnreadableEntries writes what the cache cannot read at a key's place
// and checks that the inspector shows each as such.
func TestUnreadableEntries(t *testing.T) {
	r := newServerRig(t, loadItem)
	ctx := ctxFor(t)
	for _, tc := range []struct {
		key, why, hex string
		write         func(k string) error
		version       int
	}{
		{"1", "corrupt", "6e6f7420616e20656e76656c6f7065", func(k string) error { return r.rdb.Set(ctx, k, "not an envelope", 0).Err() }, 0},
		{"2", "unknown version or flags", "ca090000", func(k string) error { return r.rdb.Set(ctx, k, "\xca\x09\x00\x00", 0).Err() }, 9},
		{"3", "corrupt", "ca0100ff", func(k string) error { return r.rdb.Set(ctx, k, "\xca\x01\x00\xff", 0).Err() }, 1},
		{"4", "not a string", "", func(k string) error { return r.rdb.HSet(ctx, k, "f", "v").Err() }, 0},
	} {
		if err := tc.write(r.cache.RedisKey(mustInt(t, tc.key))); err != nil {
			t.Fatalf("writing key %s: %v", tc.key, err)
		}
		v := r.report(t, tc.key).Entry.Value
		if !v.Exists || v.Unreadable != tc.why || v.RawHex != tc.hex {
			t.Errorf("value of %s = %+v, want unreadable %q, raw %s", tc.key, v, tc.why, tc.hex)
		}
		if tc.version != 0 && (v.Envelope == nil || v.Envelope.Version != tc.version) {
			t.Errorf("value of %s: envelope %+v, want version %d shown", tc.key, v.Envelope, tc.version)
		}
	}
	// The HTML view shows them too, escaped.
	resp, body := do(t, http.MethodGet, r.srv.URL+"?key=1", nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "corrupt") || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET ?key=1 (HTML) = %d %q: %s, want 200 text/html naming the corrupt entry", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

func mustInt(t *testing.T, s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLockedKey holds a load in the loader and checks that the inspector
// shows the fill lock, its holder and its TTL.
func TestLockedKey(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	r := newServerRig(t, func(ctx context.Context, id int64) (item, error) {
		started <- struct{}{}
		<-release
		return loadItem(ctx, id)
	}, cacheaside.WithFillLock(cacheaside.FillLock{TTL: 10 * time.Second}))
	ctx := ctxFor(t)
	done := make(chan error, 1)
	go func() {
		_, err := r.cache.Get(ctx, 5)
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the load of key 5 did not start within 10s")
	}
	e := r.report(t, "5").Entry
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Get(5) = %v", err)
	}
	if !e.Lock.Exists || e.Lock.Value == "" || e.Lock.PTTLMs <= 0 || e.Lock.PTTLMs > 10_000 {
		t.Errorf("lock during the load = %+v, want held, with a token and a PTTL in (0, 10000]", e.Lock)
	}
	if e.Value.Exists || !e.Generation.Exists {
		t.Errorf("during the load: value %+v, generation %+v; want no value and a generation", e.Value, e.Generation)
	}
}

// TestInvalidatePost invalidates through the form (303 to the key's page)
// and through JSON, and checks that the entry is gone and the generation
// replaced.
func TestInvalidatePost(t *testing.T) {
	r := newServerRig(t, loadItem)
	ctx := ctxFor(t)
	if _, err := r.cache.Get(ctx, 9); err != nil {
		t.Fatalf("Get(9) = %v", err)
	}
	before := r.report(t, "9").Entry
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	resp, body := do(t, http.MethodPost, r.srv.URL, strings.NewReader("key=9"), form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "?invalidated=1&key=9" {
		t.Fatalf("POST key=9 = %d, Location %q: %s; want 303 to ?invalidated=1&key=9", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	after := r.report(t, "9").Entry
	if after.Value.Exists || after.Generation.Value == before.Generation.Value {
		t.Errorf("after POST key=9: value %+v, generation %q (was %q); want no value and a new generation", after.Value, after.Generation.Value, before.Generation.Value)
	}

	if _, err := r.cache.Get(ctx, 9); err != nil {
		t.Fatalf("Get(9) = %v", err)
	}
	resp, body = do(t, http.MethodPost, r.srv.URL+"?format=json&key=9", nil, nil)
	var rep inspect.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST ?format=json&key=9 = %d %s (%v), want 200 and a report", resp.StatusCode, body, err)
	}
	if !rep.Invalidated || rep.Entry == nil || rep.Entry.Value.Exists {
		t.Errorf("POST ?format=json&key=9 = %+v, want invalidated and no value", rep)
	}
}

// TestBadRequests checks the answers to a wrong method, a POST without a
// key and a key the parser rejects, and the overview without a key.
func TestBadRequests(t *testing.T) {
	r := newServerRig(t, loadItem)
	jsonAccept := http.Header{"Accept": {"application/json"}}
	for _, tc := range []struct {
		method, query string
		want          int
	}{
		{http.MethodDelete, "?key=1", http.StatusMethodNotAllowed},
		{http.MethodPut, "", http.StatusMethodNotAllowed},
		{http.MethodPost, "", http.StatusBadRequest},
		{http.MethodPost, "?key=", http.StatusBadRequest},
		{http.MethodGet, "?key=abc", http.StatusBadRequest},
		{http.MethodPost, "?key=99999999999999999999", http.StatusBadRequest},
	} {
		resp, body := do(t, tc.method, r.srv.URL+tc.query, nil, jsonAccept)
		var e struct{ Error string }
		if resp.StatusCode != tc.want || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
			t.Errorf("%s %s = %d %s, want %d and a JSON error", tc.method, tc.query, resp.StatusCode, body, tc.want)
		}
		if tc.want == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD, POST" {
			t.Errorf("%s: Allow = %q, want GET, HEAD, POST", tc.method, resp.Header.Get("Allow"))
		}
	}
	if rep := r.report(t, ""); rep.Entry != nil || rep.Breakers == nil {
		t.Errorf("GET without a key = %+v, want breakers and stats only", rep)
	}
}

// TestNew checks New's errors and the default key parsers.
func TestNew(t *testing.T) {
	s := redistest.Start(t)
	rdb := s.Client(t)
	if _, err := inspect.New[int64](nil, nil, nil); err == nil || !strings.Contains(err.Error(), "nil Redis client") || !strings.Contains(err.Error(), "nil cache") {
		t.Errorf("New(nil, nil, nil) = %v, want an error naming both", err)
	}
	type point struct{ X, Y int }
	pc, err := cacheaside.New(rdb, func(context.Context, point) (int, error) { return 0, nil },
		cacheaside.WithKeyFunc(func(p point) string { return fmt.Sprint(p.X, ",", p.Y) }))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer pc.Close()
	if _, err := inspect.New(rdb, pc, nil); err == nil {
		t.Error("inspect.New of a struct-keyed cache without a parser = nil error, want one")
	}
	if _, err := inspect.New(rdb, pc, func(s string) (point, error) { return point{}, nil }); err != nil {
		t.Errorf("inspect.New with a parser = %v", err)
	}
	type sku string
	sc, err := cacheaside.New(rdb, func(context.Context, sku) (int, error) { return 1, nil })
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer sc.Close()
	h, err := inspect.New(rdb, sc, nil)
	if err != nil {
		t.Fatalf("inspect.New of a named-string-keyed cache = %v", err)
	}
	if _, err := sc.Get(context.Background(), "a-1"); err != nil {
		t.Fatalf("Get(a-1) = %v", err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?format=json&key=a-1", nil))
	if !strings.Contains(rec.Body.String(), `"payload": "1"`) {
		t.Errorf("GET ?key=a-1 = %s, want the payload 1", rec.Body.String())
	}
}

// TestHTMLEscapes stores an entry whose payload is markup (as a codec
// other than JSON, which escapes it, may write) and checks that the HTML
// view shows it escaped, with the invalidate form.
func TestHTMLEscapes(t *testing.T) {
	r := newServerRig(t, loadItem)
	env := envelope.Append(nil, envelope.Header{Expiry: time.Now().Add(time.Minute)}, []byte("<script>alert(1)</script>"))
	if err := r.rdb.Set(ctxFor(t), r.cache.RedisKey(1), env, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, http.MethodGet, r.srv.URL+"?key=1", nil, nil)
	if resp.StatusCode != http.StatusOK || strings.Contains(body, "<script>") {
		t.Fatalf("GET ?key=1 (HTML) = %d, body contains raw <script>: %s", resp.StatusCode, body)
	}
	for _, want := range []string{"&lt;script&gt;", `<form method="post">`, "version 1", "(server)</td><td>closed"} {
		if !strings.Contains(body, want) {
			t.Errorf("GET ?key=1 (HTML) does not contain %q:\n%s", want, body)
		}
	}
}

// TestRedisDown freezes the redis-server (SIGSTOP): Redis answers
// nothing, and the page still answers with the read's error, the breakers
// and Stats, and a POST reports that the invalidation failed. A frozen
// server keeps its port: after a kill, another test process's new
// redis-server could take the freed port, and the inspector then read a
// live, empty server (no error, the POST answered 200).
func TestRedisDown(t *testing.T) {
	s := redistest.Start(t)
	r := newRig(t, s.Client(t), loadItem, cacheaside.WithRedisTimeout(500*time.Millisecond))
	s.Freeze()
	defer s.Kill() // before the cleanups: the cache closes on a dead server, not a frozen one
	rep := r.report(t, "1")
	if rep.Entry == nil || rep.Entry.Error == "" || rep.Entry.Value.Exists {
		t.Errorf("report with Redis down = %+v, want the entry's read error", rep.Entry)
	}
	resp, body := do(t, http.MethodPost, r.srv.URL+"?format=json&key=1", nil, nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"error"`) {
		t.Errorf("POST ?key=1 with Redis down = %d %s, want 502 and a JSON error", resp.StatusCode, body)
	}
}
