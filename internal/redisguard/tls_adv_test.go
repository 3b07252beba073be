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
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=localhost").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	tp := redistest.Port(t)
	srv := redistest.Start(t, "--tls-port", strconv.Itoa(tp), "--tls-cert-file", crt, "--tls-key-file", key, "--tls-auth-clients", "no", "--timeout", "1")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(tp), TLSConfig: &tls.Config{InsecureSkipVerify: true}, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	g := New(Config{Client: rdb, Budget: 40 * time.Millisecond, Limit: 5 * time.Second, MaxAbandoned: 64, BreakerFailures: 2, BreakerCooldown: time.Minute})
	t.Cleanup(g.Close)
	ctx := context.Background()
	var cns []*redis.Conn
	for range 4 {
		cn := rdb.Conn()
		if err := cn.Ping(ctx).Err(); err != nil { // not through g: a TLS handshake under -race may take longer than the budget
			t.Fatal(err)
		}
		cns = append(cns, cn)
	}
	for _, cn := range cns {
		_ = cn.Close()
	}
	for end := time.Now().Add(3500 * time.Millisecond); time.Now().Before(end); {
		if err := g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }); err != nil {
			t.Fatalf("PING on the live node = %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	srv.Freeze()
	defer srv.Thaw()
	start := time.Now()
	calls := untilOpen(g, 8*time.Second, func() { _ = g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }) })
	if took := time.Since(start); g.State() != Open || took > 2*time.Second {
		t.Errorf("breaker after %d calls to a frozen node in %v: %v, want Open within 2s (Counts() = %+v)", calls, took, g.State(), g.Counts())
	}
}
