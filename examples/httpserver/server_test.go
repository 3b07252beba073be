package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/integration/pgtest"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testlog.M(m)) }

// testConfig returns a config for a redis-server of the test's own and a
// products table of its own in the local PostgreSQL, dropped at the end.
func testConfig(t *testing.T) config {
	t.Helper()
	testlog.Attach(t)
	srv := redistest.Start(t)
	table := pgtest.Table(t, pgtest.Pool(t), "id bigint PRIMARY KEY, name text NOT NULL, price_cents bigint NOT NULL")
	return config{
		addr:        "127.0.0.1:0",
		redisAddr:   srv.Addr(),
		databaseURL: pgtest.URL(),
		table:       table,
		warmTimeout: 10 * time.Second,
		// The tests count hits and warmed keys: on a machine busy enough
		// (two test suites at once) a call past the default 100ms failed
		// open, and the counts varied.
		redisTimeout: time.Second,
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// startServer builds the service and serves it with httptest.
func startServer(t *testing.T) (*app, *httptest.Server) {
	t.Helper()
	a, err := newApp(t.Context(), testConfig(t), testLogger(t))
	if err != nil {
		t.Fatalf("newApp() = %v", err)
	}
	ts := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		client.CloseIdleConnections()
		ts.Close()
		if err := a.close(); err != nil {
			t.Errorf("close() = %v", err)
		}
	})
	return a, ts
}

// client is the HTTP client of the tests. Each test closes its idle
// connections at the end, so that goleak sees no connection goroutines.
var client = &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}

// do sends a request and returns the status and body.
func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// getProduct GETs a product that must exist.
func getProduct(t *testing.T, ts *httptest.Server, id int64) Product {
	t.Helper()
	url := ts.URL + "/products/" + strconv.FormatInt(id, 10)
	status, body := do(t, http.MethodGet, url, "")
	if status != http.StatusOK {
		t.Fatalf("GET %s = %d %s, want 200", url, status, body)
	}
	var p Product
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.ID != id {
		t.Fatalf("GET %s = %s, want product %d (%v)", url, body, id, err)
	}
	return p
}

// metricValue returns the value of the Prometheus sample of the given name
// with the label cache="products" and every label given, such as
// `result="hit"`.
func metricValue(t *testing.T, ts *httptest.Server, name string, labels ...string) (float64, bool) {
	t.Helper()
	status, body := do(t, http.MethodGet, ts.URL+"/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", status)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, `cache="products"`) {
			continue
		}
		if !containsAll(line, labels) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestWarmUpAtStart(t *testing.T) {
	a, ts := startServer(t)
	// newApp's Warm and the restart watcher (which finds the new Redis
	// empty) warm together, each key once; wait for both.
	deadline := time.Now().Add(10 * time.Second)
	for a.cache.Stats().Warmed < warmProducts && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := a.cache.Stats(); s.Warmed != warmProducts {
		t.Fatalf("Stats().Warmed = %d, want %d", s.Warmed, warmProducts)
	}
	loads := a.cache.Stats().Loads
	getProduct(t, ts, 1)
	if s := a.cache.Stats(); s.Loads != loads || s.Hits != 1 {
		t.Errorf("after GET of a warmed product: %d loads (want %d), %d hits (want 1)", s.Loads, loads, s.Hits)
	}
}

func TestGetTwiceIsAHit(t *testing.T) {
	a, ts := startServer(t)
	const id = warmProducts + 27 // not warmed
	first := getProduct(t, ts, id)
	before := a.cache.Stats()
	second := getProduct(t, ts, id)
	if first != second {
		t.Errorf("second GET = %+v, want %+v", second, first)
	}
	s := a.cache.Stats()
	if s.Hits != before.Hits+1 || s.Loads != before.Loads {
		t.Errorf("second GET: hits %d → %d, loads %d → %d; want one more hit and no load", before.Hits, s.Hits, before.Loads, s.Loads)
	}
	if hits, ok := metricValue(t, ts, "cacheaside_requests_total", `result="hit"`); !ok || hits < 1 {
		t.Errorf(`/metrics cacheaside_requests_total{result="hit"} = %v (present %v), want ≥ 1`, hits, ok)
	}
}

func TestPutInvalidates(t *testing.T) {
	_, ts := startServer(t)
	const id = 3 // warmed
	old := getProduct(t, ts, id)
	price := old.PriceCents + 100
	url := ts.URL + "/products/3"
	status, body := do(t, http.MethodPut, url, `{"price_cents": `+strconv.FormatInt(price, 10)+`}`)
	if status != http.StatusOK {
		t.Fatalf("PUT %s = %d %s, want 200", url, status, body)
	}
	if got := getProduct(t, ts, id); got.PriceCents != price {
		t.Errorf("GET after PUT = %+v, want price_cents %d", got, price)
	}
}

func TestErrors(t *testing.T) {
	_, ts := startServer(t)
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/products/999999", "", http.StatusNotFound},
		{"GET", "/products/abc", "", http.StatusBadRequest},
		{"PUT", "/products/999999", `{"price_cents": 1}`, http.StatusNotFound},
		{"PUT", "/products/1", `{"price": 1}`, http.StatusBadRequest},
		{"PUT", "/products/1", `{"price_cents": -1}`, http.StatusBadRequest},
		{"PUT", "/products/1", `not json`, http.StatusBadRequest},
		{"DELETE", "/products/1", "", http.StatusMethodNotAllowed},
	} {
		status, body := do(t, tc.method, ts.URL+tc.path, tc.body)
		if status != tc.want {
			t.Errorf("%s %s %s = %d %s, want %d", tc.method, tc.path, tc.body, status, body, tc.want)
		}
		if status < 405 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s %s body = %s, want a JSON error", tc.method, tc.path, body)
		}
	}
}

func TestMetricsAndHealth(t *testing.T) {
	_, ts := startServer(t)
	getProduct(t, ts, 1)
	status, body := do(t, http.MethodGet, ts.URL+"/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d", status)
	}
	for _, want := range []string{
		`cacheaside_requests_total{cache="products",result="hit"}`,
		`cacheaside_get_duration_seconds_count{cache="products",result="hit"}`,
		`cacheaside_load_duration_seconds_count{`,
		// A Get reads its value and the prefix's clock (Clear and tags) in one
		// MGET when its process has not read the clock in the last millisecond.
		`cacheaside_redis_duration_seconds_count{cache="products",db_operation_name="MGET"}`,
		`cacheaside_breaker_state{cache="products",state="closed"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics does not contain %q", want)
		}
	}
	if status, body := do(t, http.MethodGet, ts.URL+"/healthz", ""); status != http.StatusOK || !strings.Contains(body, `"redis_breaker":"closed"`) {
		t.Errorf("GET /healthz = %d %s, want 200 with the breaker closed", status, body)
	}
}

// TestInspector reads a warmed product's entry through the mounted
// inspector, invalidates it with a POST, and checks that it is gone.
func TestInspector(t *testing.T) {
	_, ts := startServer(t)
	getProduct(t, ts, 1) // warmed, or loaded now
	entry := func() map[string]any {
		t.Helper()
		status, body := do(t, http.MethodGet, ts.URL+"/debug/cacheaside/?format=json&key=1", "")
		var rep struct {
			Entry struct {
				RedisKey string         `json:"redis_key"`
				Value    map[string]any `json:"value"`
			} `json:"entry"`
			Breakers map[string]string `json:"breakers"`
		}
		if err := json.Unmarshal([]byte(body), &rep); status != http.StatusOK || err != nil {
			t.Fatalf("GET /debug/cacheaside/?key=1 = %d %s (%v), want 200 and a JSON report", status, body, err)
		}
		if rep.Entry.RedisKey != "httpserver:{1}" || rep.Breakers[""] != "closed" {
			t.Errorf("report: redis key %q, breakers %v; want httpserver:{1} and closed", rep.Entry.RedisKey, rep.Breakers)
		}
		return rep.Entry.Value
	}
	if v := entry(); v["exists"] != true || !strings.Contains(v["payload"].(string), `"name":"product 1"`) {
		t.Errorf("value of product 1 = %v, want it stored with its JSON", v)
	}
	status, body := do(t, http.MethodPost, ts.URL+"/debug/cacheaside/?format=json&key=1", "")
	if status != http.StatusOK || !strings.Contains(body, `"invalidated": true`) {
		t.Errorf("POST /debug/cacheaside/?key=1 = %d %s, want 200 and invalidated", status, body)
	}
	if v := entry(); v["exists"] == true {
		t.Errorf("value of product 1 after the POST = %v, want none", v)
	}
}

// TestServeShutsDown runs the whole service on a real listener and stops
// it the way a signal does, by cancelling its context; goleak in TestMain
// checks that the cache, the clients and the pool were closed.
func TestServeShutsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg, logger := testConfig(t), testLogger(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, cfg, logger) }()

	url := "http://" + ln.Addr().String()
	if status, body := do(t, http.MethodGet, url+"/products/2", ""); status != http.StatusOK {
		t.Fatalf("GET /products/2 = %d %s, want 200", status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve() = %v, want nil after a graceful shutdown", err)
		}
	case <-time.After(2 * shutdownTimeout):
		t.Fatal("serve did not return after its context was cancelled")
	}
	client.CloseIdleConnections()
	if resp, err := client.Get(url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("GET /healthz after shutdown succeeded, want a connection error")
	}
}
