package redisguard

import (
	"context"
	"crypto/tls"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestFrozenTLSNodeAfterServerIdleTimeoutIsSilent: over TLS, the
// connections that Redis's `timeout` closed hold the server's TLS alert
// (close_notify) and a FIN: the peek (no TCP_INFO count for a TLS
// connection) finds bytes in them, so conns.replyWaiting reports a reply
// waiting and a later freeze is judged slow until the limit. A fix that
// only discounts the FIN in TCP_INFO's byte count would not cover this.
func TestFrozenTLSNodeAfterServerIdleTimeoutIsSilent(t *testing.T) {
	srv, addr := startTLS(t, "--timeout", "1")
	rdb := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: &tls.Config{InsecureSkipVerify: true}, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	g := New(Config{Client: rdb, Budget: 40 * time.Millisecond, Limit: 5 * time.Second, MaxAbandoned: 64, BreakerFailures: 2, BreakerCooldown: time.Minute})
	t.Cleanup(g.Close)
	ctx := context.Background()
	growPool(t, rdb, 4) // not through g: a TLS handshake under -race may take longer than the budget
	pingFor(t, g, rdb, 3500*time.Millisecond)
	srv.Freeze()
	defer srv.Thaw()
	start := time.Now()
	calls := untilOpen(g, 8*time.Second, func() { _ = g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }) })
	if took := time.Since(start); g.State() != Open || took > 2*time.Second {
		t.Errorf("breaker after %d calls to a frozen node in %v: %v, want Open within 2s (Counts() = %+v)", calls, took, g.State(), g.Counts())
	}
}

// startTLS starts a redis-server with a TLS port too (a self-signed
// certificate from openssl), with args, and returns it and the TLS
// port's address.
func startTLS(t *testing.T, args ...string) (*redistest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=localhost").CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v %s", err, out)
	}
	tp := redistest.Port(t)
	srv := redistest.Start(t, append([]string{"--tls-port", strconv.Itoa(tp), "--tls-cert-file", crt, "--tls-key-file", key, "--tls-auth-clients", "no"}, args...)...)
	return srv, "127.0.0.1:" + strconv.Itoa(tp)
}

// growPool leaves n idle connections in rdb's pool, dialed and used
// outside any guard call.
func growPool(t *testing.T, rdb *redis.Client, n int) {
	t.Helper()
	var cns []*redis.Conn
	for range n {
		cn := rdb.Conn()
		if err := cn.Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		cns = append(cns, cn)
	}
	for _, cn := range cns {
		_ = cn.Close()
	}
}

// pingFor PINGs through g every 200 ms for d: light traffic that keeps
// the pool's top connection busy and leaves the others idle.
//
// On a machine loaded well past its cores (CI runs ten steps on two), a
// live Redis can take longer than these tests' 40 ms budget to answer,
// with nothing else to show it alive, which the guard rightly counts as
// a failure: so a PING may fail and is sent again (setupCall) until it
// succeeds (a success resets the breaker's count of consecutive
// failures), as long as the breaker stays closed. The tests are about the
// freeze that follows.
func pingFor(t *testing.T, g *Guard, rdb *redis.Client, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		setupCall(t, g, "PING", func() error {
			return g.Do(context.Background(), "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
		})
	}
}

// setupCall runs call, a setup call through g to a live node, until it
// succeeds: on a machine loaded far past its cores a live Redis can
// answer after these tests' 40 ms budget, which the guard rightly counts
// as a failure (see pingFor). It fails the test if the breaker leaves
// closed or nothing succeeds within 10 s.
func setupCall(t *testing.T, g *Guard, what string, call func() error) {
	t.Helper()
	giveUp := time.Now().Add(10 * time.Second)
	for failed := 0; ; failed++ {
		err := call()
		if err == nil {
			return
		}
		t.Logf("setup: %s on a live node = %v", what, err)
		for _, s := range g.States() {
			if s != Closed {
				t.Fatalf("setup: a breaker is %v on a live node after %d failed calls (%s)", s, failed+1, what)
			}
		}
		if time.Now().After(giveUp) {
			t.Fatalf("setup: %s on a live node failed for 10 s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
