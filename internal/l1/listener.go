package l1

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Listener holds the backplane's subscription to one Redis pub/sub
// channel: Invalidate and Set on one process publish the value keys they
// touched (Encode), and every other process drops them from its L1 within
// a round trip, together with the results of reads of them in flight (see
// Cache). When the subscription drops, or a reconnect is needed, the
// process cannot know what it missed, so OnDrop must mark its whole L1
// unverified (Cache.Unverify): healthy reads then stop trusting it until
// entries are read again under the new subscription, while reads during a
// Redis outage still may use it.
type Listener struct {
	Sub     redis.UniversalClient
	Channel string
	// OnSubscribed runs each time a subscription is confirmed;
	// OnMessage for each message; OnDrop each time a subscription ends or
	// fails to start. They run on Run's goroutine.
	OnSubscribed, OnDrop func()
	OnMessage            func(payload string)
	// OnPanic, if not nil, is told of a panic in a subscription (the
	// subscription dials a connection of its own through the client's
	// hooks, and a hook may panic), which is then taken for a failed one.
	OnPanic func(p any)

	mu     sync.Mutex
	sub    *redis.PubSub
	closed bool
}

// idle is how long a quiet subscription waits before it pings Redis.
const idle = 2 * time.Second

// Run subscribes and resubscribes, with a capped backoff, until ctx is
// done or Stop is called.
func (l *Listener) Run(ctx context.Context) {
	for round := 0; ctx.Err() == nil; round++ {
		if l.listenSafely(ctx) {
			round = 0
		}
		l.OnDrop()
		t := time.NewTimer(min(100*time.Millisecond<<min(round, 4), 2*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// listenSafely is listen with a panic in it taken for a subscription that
// failed: Run's goroutine must not crash the process.
func (l *Listener) listenSafely(ctx context.Context) (subscribed bool) {
	defer func() {
		if p := recover(); p != nil {
			if l.OnPanic != nil {
				l.OnPanic(p)
			}
			subscribed = false
		}
	}()
	return l.listen(ctx)
}

// listen runs one subscription until it fails, and reports whether it got
// as far as being subscribed.
func (l *Listener) listen(ctx context.Context) (subscribed bool) {
	sub := l.Sub.Subscribe(ctx, l.Channel)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = sub.Close()
		return false
	}
	l.sub = sub
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.sub = nil
		l.mu.Unlock()
		_ = sub.Close()
	}()

	pinged := false
	for ctx.Err() == nil {
		msg, err := sub.ReceiveTimeout(ctx, idle)
		if err != nil {
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() && !pinged {
				// Quiet channel: check the connection is alive. A second
				// timeout without the pong means it is not.
				pinged = sub.Ping(ctx) == nil
				if pinged {
					continue
				}
			}
			return subscribed
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				subscribed = true
				l.OnSubscribed()
			}
		case *redis.Message:
			l.OnMessage(m.Payload)
		}
	}
	return subscribed
}

// Stop ends the subscription and keeps Run from starting another; the
// owner cancels Run's context too and waits for Run to return.
func (l *Listener) Stop() {
	l.mu.Lock()
	l.closed = true
	sub := l.sub
	l.mu.Unlock()
	if sub != nil {
		_ = sub.Close()
	}
}
