// Package faultproxy puts a fault-injecting TCP proxy between a test and a
// server, such as Redis, on the loopback interface.
//
// It runs Toxiproxy (github.com/Shopify/toxiproxy/v2) in-process as a
// library, so no toxiproxy-server binary and no HTTP API are involved. A test
// points its client at Proxy.Addr and can then add latency, swallow all
// traffic, or refuse connections, and undo each fault again.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// Toxic names used by this package. Toxiproxy identifies toxics by name, so
// fixed names make the fault methods idempotent.
const (
	latencyToxic   = "faultproxy_latency"
	blackholeUp    = "faultproxy_blackhole_up"
	blackholeDown  = "faultproxy_blackhole_down"
	listenLoopback = "127.0.0.1:0"
	blackholeType  = "faultproxy_blackhole"
)

func init() {
	toxics.Register(blackholeType, new(blackholeToxic))
}

// blackholeToxic drops all data and never closes the connection.
//
// It replaces Toxiproxy's "timeout" toxic with timeout 0, which drops data
// the same way but leaks a goroutine in v2.5.0 when it is removed while data
// is in flight: its Cleanup closes the stub and RemoveToxic then returns
// without reconnecting the previous stub, which blocks forever sending the
// next chunk to a channel nobody reads. Without a Cleanup method, removal
// takes the regular path that drains and relinks the chain.
type blackholeToxic struct{}

// Pipe discards every chunk until the toxic is interrupted or the
// connection ends.
func (*blackholeToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
		}
	}
}

// proxySeq makes proxy names unique within the test binary.
var proxySeq atomic.Int64

// Proxy is an in-process TCP proxy from a loopback port to one upstream
// address. Its methods are safe for concurrent use. Methods that take a
// testing.TB fail that test on error and must be called from its goroutine.
type Proxy struct {
	proxy *toxiproxy.Proxy
	addr  string

	// mu serializes fault changes, which check for a toxic before adding it.
	mu sync.Mutex
}

// New starts a proxy that listens on a free 127.0.0.1 port and forwards every
// connection to upstream, for example "127.0.0.1:6380". Each accepted client
// connection gets its own upstream connection, dialed when the client
// connects. The proxy is stopped, and all its connections are closed, when tb
// finishes.
func New(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	// The metrics container keeps a private Prometheus registry that nothing
	// scrapes; the API server is never started, it only carries the logger
	// and the metrics settings that proxies read.
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	name := fmt.Sprintf("faultproxy-%d-%s", proxySeq.Add(1), tb.Name())
	p := toxiproxy.NewProxy(server, name, listenLoopback, upstream)
	if err := p.Start(); err != nil {
		tb.Fatalf("faultproxy: start proxy to %s: %v", upstream, err)
	}
	tb.Cleanup(p.Stop)
	// Start has resolved the listen address to the bound port; Enable
	// relies on it to come back on the same port.
	p.Lock()
	addr := p.Listen
	p.Unlock()
	return &Proxy{proxy: p, addr: addr}
}

// Addr returns the proxy's listening address in host:port form. It stays the
// same across Disable and Enable.
func (p *Proxy) Addr() string { return p.addr }

// AddLatency delays all data flowing from the upstream to the client by
// latency, plus or minus a random jitter (both rounded to milliseconds).
// Data from the client is not delayed, so a request-response exchange
// takes at least latency-jitter longer. It affects existing and new
// connections; calling it again replaces the previous setting.
func (p *Proxy) AddLatency(tb testing.TB, latency, jitter time.Duration) {
	tb.Helper()
	if latency < 0 || jitter < 0 {
		tb.Fatalf("faultproxy: negative latency %v or jitter %v", latency, jitter)
	}
	attrs := map[string]int64{"latency": latency.Milliseconds(), "jitter": jitter.Milliseconds()}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proxy.Toxics.GetToxic(latencyToxic) != nil {
		body, err := json.Marshal(map[string]any{"attributes": attrs, "toxicity": 1.0})
		if err != nil {
			tb.Fatalf("faultproxy: encode latency toxic: %v", err)
		}
		if _, err := p.proxy.Toxics.UpdateToxicJson(latencyToxic, bytes.NewReader(body)); err != nil {
			tb.Fatalf("faultproxy: update latency: %v", err)
		}
		return
	}
	p.addToxic(tb, latencyToxic, "latency", "downstream", attrs)
}

// Blackhole makes the proxy swallow all traffic in both directions: data is
// accepted but never forwarded, and nothing is ever answered. Connections
// stay open, so clients see timeouts rather than errors. New connections
// are still accepted and behave the same way. After Reset, connections
// carry data again, but whatever was swallowed is lost for good: a client
// that still waits for a reply to a swallowed request, without a deadline,
// waits forever. go-redis and pgx discard a connection after a timeout, so
// they recover on fresh connections.
func (p *Proxy) Blackhole(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proxy.Toxics.GetToxic(blackholeUp) == nil {
		p.addToxic(tb, blackholeUp, blackholeType, "upstream", nil)
	}
	if p.proxy.Toxics.GetToxic(blackholeDown) == nil {
		p.addToxic(tb, blackholeDown, blackholeType, "downstream", nil)
	}
}

// Reset removes all faults added by AddLatency and Blackhole. Existing
// connections continue.
func (p *Proxy) Reset(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.proxy.Toxics.ResetToxics(context.Background())
}

// Disable stops the proxy: its listening socket is closed, so new
// connections are refused, and all existing connections are closed. Toxics
// are kept and apply again after Enable. Disabling a disabled proxy does
// nothing.
func (p *Proxy) Disable(tb testing.TB) {
	tb.Helper()
	p.proxy.Stop()
}

// Enable starts a disabled proxy again on the same address. Enabling an
// enabled proxy does nothing. It fails the test if the port has been taken
// by someone else in the meantime.
func (p *Proxy) Enable(tb testing.TB) {
	tb.Helper()
	err := p.proxy.Start()
	if err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
		tb.Fatalf("faultproxy: re-enable proxy on %s: %v", p.addr, err)
	}
}

func (p *Proxy) addToxic(tb testing.TB, name, typ, stream string, attrs any) {
	tb.Helper()
	body, err := json.Marshal(map[string]any{
		"name":       name,
		"type":       typ,
		"stream":     stream,
		"toxicity":   1.0,
		"attributes": attrs,
	})
	if err != nil {
		tb.Fatalf("faultproxy: encode %s toxic: %v", typ, err)
	}
	if _, err := p.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		tb.Fatalf("faultproxy: add %s %s toxic: %v", stream, typ, err)
	}
}
