package l1

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Subscription's connection: run opens one after another (with a capped
// backoff), subscribes each to every channel with members, receives on it
// until it fails, and tells every member of the drop.

// idle is how long a quiet subscription waits before it pings Redis.
const idle = 2 * time.Second

// run subscribes and resubscribes, with a capped backoff, until ctx is
// done.
func (s *Subscription) run(ctx context.Context) {
	for round := 0; ctx.Err() == nil; round++ {
		if s.listenSafely(ctx) {
			round = 0
		}
		s.unregister(s.dropped())
		t := time.NewTimer(min(100*time.Millisecond<<min(round, 4), 2*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// dropped forgets the confirmations of the connection that ended and
// tells every member, which ends its lease (lease.go). It returns the
// channels whose registry entries should go: their members trust no L1
// until they have caught up from the stream.
func (s *Subscription) dropped() (chans []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.confirmed)
	s.awaiting = nil
	registered := s.registered
	s.registered = false
	for ch, ms := range s.members {
		if registered {
			chans = append(chans, ch)
		}
		for _, m := range ms {
			m.OnDrop()
		}
	}
	return chans
}

// listenSafely is listen with a panic in it taken for a subscription that
// failed: run's goroutine must not crash the process.
func (s *Subscription) listenSafely(ctx context.Context) (subscribed bool) {
	defer func() {
		if p := recover(); p != nil {
			s.panicked(p)
			subscribed = false
		}
	}()
	return s.listen(ctx)
}

// panicked tells every member that has an OnPanic of a panic.
func (s *Subscription) panicked(p any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ms := range s.members {
		for _, m := range ms {
			if m.OnPanic != nil {
				m.OnPanic(p)
			}
		}
	}
}

// subscribeAll makes ps the current connection and subscribes it to
// every channel with members, under sendMu (released even if a dial hook
// panics in SUBSCRIBE). It reports whether the SUBSCRIBE was sent.
func (s *Subscription) subscribeAll(ctx context.Context, ps *redis.PubSub) bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	c := &psConn{ps: ps, on: map[string]bool{}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.conn = c
	chans := make([]string, 0, len(s.members))
	for ch := range s.members {
		chans = append(chans, ch)
		c.on[ch] = true
	}
	c.sentSubscribe(chans)
	s.mu.Unlock()
	if len(chans) == 0 {
		return false // nothing to SUBSCRIBE: receiving would dial (see startOnce)
	}
	return ps.Subscribe(ctx, chans...) == nil
}

// listen runs one connection until it fails, and reports whether Redis
// confirmed a subscription on it.
func (s *Subscription) listen(ctx context.Context) (subscribed bool) {
	ps := s.client.Subscribe(ctx) // no channel: no I/O yet
	defer func() {
		s.mu.Lock()
		if s.conn != nil && s.conn.ps == ps {
			s.conn = nil
		}
		s.mu.Unlock()
		_ = ps.Close()
	}()
	if !s.subscribeAll(ctx, ps) {
		return false
	}
	pinged := false
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, idle)
		if err != nil {
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() && !pinged {
				// Quiet channel: check the connection is alive. A second
				// timeout without the pong means it is not.
				pinged = ps.Ping(ctx) == nil
				if pinged {
					continue
				}
			}
			return subscribed
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe":
				subscribed = true
				s.confirmedOn(ctx, ps, m.Channel)
			case "unsubscribe":
				s.unconfirm(m.Channel)
			}
		case *redis.Message:
			s.deliver(m.Channel, m.Payload)
		case *redis.Pong:
			s.ponged(ps, m.Payload) // after every message before it
		}
	}
	return subscribed
}

// unconfirm records that Redis confirmed an UNSUBSCRIBE of channel, and
// tells its members: an UNSUBSCRIBE that raced a new member's Join is a
// drop until the SUBSCRIBE after it is confirmed (resume).
func (s *Subscription) unconfirm(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.confirmed[channel] = false
	for _, m := range s.members[channel] {
		m.OnDrop()
	}
}
