package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// proxy stands in front of a Redis the user named (-redis), which the demo
// must not kill. A kill closes the proxy's listener and every connection
// through it, so the fleet sees refused connections as in a crash; a
// restart deletes the demo's keys from the real Redis with SCAN and DEL
// (its other keys are left alone) and opens the listener again on the same
// port.
type proxy struct {
	target   string
	prefixes []string
	direct   *redis.Client // to the target, for deleting the demo's keys

	mu      sync.Mutex
	ln      net.Listener // nil while down
	address string
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup // the accept loop and the copy goroutines
}

func newProxy(ctx context.Context, target string, prefixes []string) (*proxy, error) {
	p := &proxy{
		target:   target,
		prefixes: prefixes,
		direct:   redis.NewClient(&redis.Options{Addr: target}),
		conns:    make(map[net.Conn]struct{}),
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = p.direct.Close()
		return nil, err
	}
	p.address = ln.Addr().String()
	p.serve(ln)
	return p, nil
}

func (p *proxy) addr() string { return p.address }

func (p *proxy) describe() string {
	return fmt.Sprintf("your Redis at %s behind an in-process TCP proxy on %s (your Redis is never killed); outage = the proxy refuses and drops connections, restart = the demo's keys (%v*) are deleted with SCAN+DEL and the proxy reopens",
		p.target, p.address, p.prefixes)
}

// serve runs the accept loop of ln on a tracked goroutine.
func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by kill or close
			}
			p.wg.Go(func() { p.forward(c) })
		}
	})
}

// forward copies bytes both ways between client c and a new connection
// to the target, until either side closes or kill drops them.
func (p *proxy) forward(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// One direction ended: end the other too.
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Go(func() { pipe(up, c) })
	wg.Go(func() { pipe(c, up) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track registers a connection pair, unless the proxy went down
// meanwhile.
func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// kill closes the listener and every connection, and waits until the
// proxy's goroutines have ended.
func (p *proxy) kill() error {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *proxy) restart(ctx context.Context) error {
	_ = p.kill()
	if err := p.deleteKeys(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(rebindTimeout)
	for {
		ln, err := net.Listen("tcp", p.address)
		if err == nil {
			p.serve(ln)
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
