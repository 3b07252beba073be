package faultproxy_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/cacheaside/cacheaside/integration/faultproxy"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestMain fails the package if any test leaves goroutines behind. No
// third-party goroutine is ignored: stopping a proxy closes all of its
// connections, which ends Toxiproxy's per-connection goroutines, and every
// go-redis client is closed in a cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// setup starts Redis, a proxy in front of it, and a client that talks to
// Redis through the proxy and honours context deadlines without retrying.
func setup(t *testing.T) (*redistest.Server, *faultproxy.Proxy, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	p := faultproxy.New(t, srv.Addr())
	if !strings.HasPrefix(p.Addr(), "127.0.0.1:") || p.Addr() == srv.Addr() {
		t.Fatalf("proxy Addr() = %q; want its own loopback port", p.Addr())
	}
	c := newClient(t, p.Addr())
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through proxy: %v", err)
	}
	return srv, p, c
}

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// timedGet runs GET k with the given deadline and reports how long it took.
func timedGet(c *redis.Client, deadline time.Duration) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	v, err := c.Get(ctx, "k").Result()
	return v, time.Since(start), err
}

func mustGet(t *testing.T, c *redis.Client, what string) time.Duration {
	t.Helper()
	v, d, err := timedGet(c, 5*time.Second)
	if err != nil || v != "v" {
		t.Fatalf("GET %s = %q, %v; want v", what, v, err)
	}
	return d
}

func TestForwards(t *testing.T) {
	srv, _, c := setup(t)
	mustGet(t, c, "through proxy")
	if got := srv.CLI(t, "GET", "k"); got != "v" {
		t.Fatalf("value written through the proxy is %q on the server; want v", got)
	}
}

func TestLatency(t *testing.T) {
	_, p, c := setup(t)
	if d := mustGet(t, c, "before latency"); d >= 100*time.Millisecond {
		t.Fatalf("GET without latency took %v", d)
	}

	p.AddLatency(t, 100*time.Millisecond, 0)
	if d := mustGet(t, c, "with latency"); d < 100*time.Millisecond {
		t.Fatalf("GET with 100ms latency took %v; want >= 100ms", d)
	}

	// A second call replaces the setting instead of stacking.
	p.AddLatency(t, 200*time.Millisecond, 10*time.Millisecond)
	if d := mustGet(t, c, "with raised latency"); d < 190*time.Millisecond || d > 390*time.Millisecond {
		t.Fatalf("GET with 200ms±10ms latency took %v", d)
	}

	p.Reset(t)
	if d := mustGet(t, c, "after Reset"); d >= 100*time.Millisecond {
		t.Fatalf("GET after Reset took %v; want no added latency", d)
	}
}

func TestBlackhole(t *testing.T) {
	_, p, c := setup(t)
	p.Blackhole(t)
	p.Blackhole(t) // idempotent

	// An existing pooled connection swallows the request.
	_, d, err := timedGet(c, 300*time.Millisecond)
	if err == nil || errors.Is(err, redis.Nil) {
		t.Fatalf("GET through blackhole: err = %v; want a timeout", err)
	}
	if d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("GET through blackhole failed after %v; want about 300ms", d)
	}

	// A new connection is accepted but its handshake is never answered.
	fresh := newClient(t, p.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = fresh.Ping(ctx).Err()
	cancel()
	if err == nil {
		t.Fatal("PING on a new connection through blackhole succeeded; want a timeout")
	}

	p.Reset(t)
	mustGet(t, c, "after Reset")
	if err := fresh.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING on new client after Reset: %v", err)
	}
}

// TestResetWithDataInFlight removes the blackhole while a request is
// still on its way through the proxy. The connection must keep working and
// no goroutine may be left behind (checked by TestMain).
func TestResetWithDataInFlight(t *testing.T) {
	_, p, _ := setup(t)
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	// A round trip first: Dial returns before the proxy has accepted the
	// connection, and the proxy might otherwise accept it only after Reset.
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatalf("write PING: %v", err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING through proxy = %q, %v", line, err)
	}
	for range 20 {
		p.Blackhole(t)
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			t.Fatalf("write PING: %v", err)
		}
		p.Reset(t)
	}
	// Each swallowed PING is lost; the others are answered. The marker
	// shows that the connection still works after the last Reset.
	if _, err := conn.Write([]byte("ECHO marker\r\n")); err != nil {
		t.Fatalf("write ECHO: %v", err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read after Reset: %v", err)
		}
		if line == "$6\r\n" {
			continue
		}
		if line == "marker\r\n" {
			break
		}
		if line != "+PONG\r\n" {
			t.Fatalf("unexpected reply %q", line)
		}
	}
}

func TestResetKeepsHealthyConnections(t *testing.T) {
	_, p, _ := setup(t)
	// A single pooled connection that must survive removing a latency toxic.
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), PoolSize: 1, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	before, err := c.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID: %v", err)
	}
	p.AddLatency(t, 20*time.Millisecond, 0)
	p.Reset(t)
	after, err := c.ClientID(ctx).Result()
	if err != nil || after != before {
		t.Fatalf("CLIENT ID after Reset = %d, %v; want the same connection %d", after, err, before)
	}
}

func TestDisableEnable(t *testing.T) {
	_, p, c := setup(t)
	addr := p.Addr()

	p.Disable(t)
	p.Disable(t) // idempotent
	if _, _, err := timedGet(c, 2*time.Second); err == nil || errors.Is(err, redis.Nil) {
		t.Fatalf("GET through disabled proxy: err = %v; want a connection error", err)
	}
	// New connections are refused rather than left hanging.
	_, d, err := timedGet(newClient(t, addr), 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("GET on a new client through disabled proxy: err = %v; want connection refused", err)
	}
	if d > time.Second {
		t.Errorf("refused GET took %v; want a fast failure", d)
	}

	p.Enable(t)
	p.Enable(t) // idempotent
	if p.Addr() != addr {
		t.Fatalf("Addr() changed across Disable/Enable: %s -> %s", addr, p.Addr())
	}
	mustGet(t, c, "after Enable")
}
