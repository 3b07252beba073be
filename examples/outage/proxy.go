package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// proxy stands in front of a Redis the user named (-redis), which the demo
// must not kill. It is a Toxiproxy proxy (github.com/Shopify/toxiproxy/v2,
// run in-process as a library, as the repository's fault tests do). A kill
// stops it: its listener and every connection through it are closed, so
// the fleet sees refused connections as in a crash. A restart deletes the
// demo's keys from the real Redis with SCAN and DEL (its other keys are
// left alone) and starts the proxy again on the same port.
type proxy struct {
	target   string
	prefixes []string
	direct   *redis.Client // to the target, for deleting the demo's keys
	px       *toxiproxy.Proxy
	address  string
}

func newProxy(ctx context.Context, target string, prefixes []string) (*proxy, error) {
	p := &proxy{
		target:   target,
		prefixes: prefixes,
		direct:   redis.NewClient(&redis.Options{Addr: target}),
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.direct.Ping(pctx).Err(); err != nil {
		_ = p.direct.Close()
		return nil, fmt.Errorf("redis %s: %w", target, err)
	}
	// Start from an empty cache, whatever an earlier run left.
	if err := p.deleteKeys(pctx); err != nil {
		_ = p.direct.Close()
		return nil, err
	}
	// The server only carries the logger (silent) and the metrics settings
	// (a private registry nothing scrapes); its HTTP API is never started.
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p.px = toxiproxy.NewProxy(server, "outage-demo", "127.0.0.1:0", target)
	if err := p.px.Start(); err != nil {
		_ = p.direct.Close()
		return nil, fmt.Errorf("start proxy to %s: %w", target, err)
	}
	// Start resolved the listen address to the bound port; restart comes
	// back on it.
	p.px.Lock()
	p.address = p.px.Listen
	p.px.Unlock()
	return p, nil
}

func (p *proxy) addr() string { return p.address }

func (p *proxy) describe() string {
	return fmt.Sprintf("your Redis at %s behind an in-process Toxiproxy on %s (your Redis is never killed); outage = the proxy refuses and drops connections, restart = the demo's keys (%v*) are deleted with SCAN+DEL and the proxy reopens",
		p.target, p.address, p.prefixes)
}

// kill stops the proxy: it closes the listener and every connection.
func (p *proxy) kill() error {
	p.px.Stop()
	return nil
}

func (p *proxy) restart(ctx context.Context) error {
	_ = p.kill()
	if err := p.deleteKeys(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(rebindTimeout)
	for {
		err := p.px.Start()
		if err == nil || errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("reopen proxy on %s: %w", p.address, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close stops the proxy and deletes the demo's keys from the user's Redis.
func (p *proxy) close() error {
	_ = p.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.deleteKeys(ctx)
	return errors.Join(err, p.direct.Close())
}

// deleteKeys deletes every key under the demo's prefixes, and only those.
func (p *proxy) deleteKeys(ctx context.Context) error {
	for _, prefix := range p.prefixes {
		iter := p.direct.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			err := p.direct.Del(ctx, batch...).Err()
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == 500 {
				if err := flush(); err != nil {
					return fmt.Errorf("delete demo keys: %w", err)
				}
			}
		}
		if err := errors.Join(iter.Err(), flush()); err != nil {
			return fmt.Errorf("delete demo keys: %w", err)
		}
	}
	return nil
}
