package l1

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The subscription's lease in the registry of live subscribers
// (registry.go), and the trust its members draw from it.
//
// A round renews the lease (renewScript, on a regular connection; sent at
// time a), then PINGs on the pub/sub connection. The PONG comes after
// every message published before the renewal reached Redis, and listen
// hands those to the members before it reads the PONG. So from the renewal
// on, every publisher counts this subscription until the entry ends (at
// Redis's now + LeaseTTL, which is after a + LeaseTTL), and every message
// it did not count was handed over: at the PONG the members may trust
// their L1 until a + LeaseTTL - leaseMargin by their own clock (Lease),
// strictly before the entry ends. The first lease of a (re)subscription
// comes with its catch-up (resume.go): the renewal goes first in the
// round trip that reads the streams, so every message published before
// it landed is in what is read and handed over, and no PONG is needed.
// Nor does a renewal that extends a lease still held in the registry
// (granted at the PONG or catch-up that followed its start): every
// message since counted this subscription, so its members may trust
// their L1 until a + LeaseTTL - leaseMargin as soon as it returns.
// The next round starts only after the PONG (or on a new connection,
// whose SUBSCRIBE Redis just confirmed), so
// a connection that stopped answering (closed by Redis without the
// process reading the close yet, half-open) renews at most once more: its
// members stop trusting their L1 within LeaseTTL - leaseMargin of the
// last renewal, and publishers stop counting it LeaseTTL after it, before
// which they wait for it (it confirms once it has caught up from the
// stream, or they report it not confirmed). A drop the subscription
// notices ends its members' lease (Cache.Unverify) and removes its entry:
// publishers need not wait for a process that trusts nothing until it has
// caught up.

// LeaseTTL is how long a subscription's entry in the registry lives after
// each renewal; rounds start every LeaseTTL/3 (or two round trips, when
// longer), each trusted a round trip after it was sent, so a Redis that
// answers within about 0.3 LeaseTTL never lets a healthy lease lapse.
const LeaseTTL = 3 * time.Second

// leaseEvery is the time between the starts of two rounds.
const leaseEvery = LeaseTTL / 3

// leaseMargin is how long before its registry entry a lease ends for the
// members: covers this host's clock running up to 10% slower than
// Redis's over a lease.
const leaseMargin = LeaseTTL / 10

// unregisterTimeout bounds the removal of an entry.
const unregisterTimeout = time.Second

// leaseRound is one renewal whose PONG is awaited.
type leaseRound struct {
	conn   *psConn
	token  string    // the PING's payload
	sent   time.Time // when the renewal was sent
	chans  []string
	ponged chan struct{} // closed when listen reads the PONG
}

// newID returns a random subscription id.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// kickLease asks leaseLoop for a round now (a channel was subscribed).
func (s *Subscription) kickLease() {
	select {
	case s.leaseKick <- struct{}{}:
	default:
	}
}

// leaseLoop runs lease rounds every leaseEvery, and at once when kicked,
// until ctx is done.
func (s *Subscription) leaseLoop(ctx context.Context) {
	var prev *leaseRound // the last round, when its PONG came
	for ctx.Err() == nil {
		start := time.Now()
		r := s.renew(ctx, prev)
		prev = nil
		if r != nil && !s.awaitPong(ctx, r) {
			continue // a new connection: renew on it at once
		}
		if r != nil && isClosed(r.ponged) {
			prev = r
		}
		t := time.NewTimer(time.Until(start.Add(leaseEvery)))
		select {
		case <-ctx.Done():
		case <-s.leaseKick:
		case <-t.C:
		}
		t.Stop()
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// renew renews the lease of every confirmed channel of the current
// connection and PINGs on it; it returns the round, or nil when there
// is nothing to renew or the renewal failed (the next round retries).
// prev is the round before, when its PONG came.
func (s *Subscription) renew(ctx context.Context, prev *leaseRound) (r *leaseRound) {
	defer func() {
		// The PING may dial (see sync) through the client's hooks.
		if p := recover(); p != nil {
			s.panicked(p)
			r = nil
		}
	}()
	s.mu.Lock()
	c := s.conn
	var chans []string
	if c != nil {
		for ch, ok := range s.confirmed {
			if ok && c.on[ch] && len(s.members[ch]) > 0 {
				chans = append(chans, ch)
			}
		}
	}
	s.mu.Unlock()
	if len(chans) == 0 {
		return nil
	}
	sent := time.Now()
	s.mu.Lock()
	s.registered = true // from the first try: a partial renewal may have landed
	s.mu.Unlock()
	extended, ok := s.register(ctx, chans)
	if !ok {
		return nil
	}
	r = &leaseRound{conn: c, token: "lease " + strconv.FormatUint(s.leaseSeq.Add(1), 10), sent: sent, chans: chans, ponged: make(chan struct{})}
	s.mu.Lock()
	if s.conn != c {
		s.mu.Unlock()
		return nil
	}
	// A lease extended while it held needs no PONG: every message
	// published since it began counted this subscription, and those
	// before were handed over by the PONG that granted it. Only for the
	// channels of the round before, on this connection, granted at its
	// PONG: a renewal that failed for us may have landed and begun the
	// lease after a lapse, with no PONG after it. The PING below still
	// gates the next round.
	if prev != nil && prev.conn == c {
		s.leaseOn(c, sent, slices.DeleteFunc(extended, func(ch string) bool { return !slices.Contains(prev.chans, ch) }))
	}
	s.awaiting = r
	s.mu.Unlock()
	if err := c.ps.Ping(ctx, r.token); err != nil {
		_ = c.ps.Close() // go-redis would redial unseen: a drop (see sync)
		return nil
	}
	return r
}

// register renews the lease of chans in their registries, in one round
// trip (one per node on a Cluster), and reports whether every renewal
// succeeded, and which of them extended a lease that still held.
func (s *Subscription) register(ctx context.Context, chans []string) (extended []string, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, LeaseTTL)
	defer cancel()
	ms := LeaseTTL.Milliseconds()
	renewals := make([]*redis.Cmd, 0, len(chans))
	_, err := s.client.Pipelined(cctx, func(p redis.Pipeliner) error {
		for _, ch := range chans {
			// EVAL: a pipeline cannot fall back on NOSCRIPT.
			renewals = append(renewals, renewScript.Eval(cctx, p, []string{LiveKey(ch)}, s.id, ms))
		}
		return nil
	})
	if err != nil || len(renewals) != len(chans) {
		return nil, false
	}
	for i, c := range renewals {
		if held, _ := c.Int64(); held == 1 {
			extended = append(extended, chans[i])
		}
	}
	return extended, true
}

// awaitPong waits for r's PONG and then lets the members of its channels
// trust their L1 (grant). It returns false when the connection was
// replaced first.
func (s *Subscription) awaitPong(ctx context.Context, r *leaseRound) bool {
	check := time.NewTicker(leaseEvery)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return true
		case <-r.ponged:
			s.grant(r)
			return true
		case <-s.leaseKick:
		case <-check.C:
		}
		s.mu.Lock()
		same := s.conn == r.conn
		if !same && s.awaiting == r {
			s.awaiting = nil
		}
		s.mu.Unlock()
		if !same {
			return false
		}
	}
}

// ponged hands a PONG read on ps to the round awaiting it.
func (s *Subscription) ponged(ps *redis.PubSub, payload string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.awaiting; r != nil && r.conn.ps == ps && r.token == payload {
		s.awaiting = nil
		close(r.ponged)
	}
}

// grant lets the members of r's channels trust their L1 until r's lease
// ends for them, unless its connection dropped meanwhile: dropped then
// ended their lease and removed the entry.
func (s *Subscription) grant(r *leaseRound) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaseOn(r.conn, r.sent, r.chans)
}

// leaseOn lets the members of chans trust their L1 until the lease of a
// renewal sent at sent ends for them, unless c is not the current
// connection any more (under s.mu).
func (s *Subscription) leaseOn(c *psConn, sent time.Time, chans []string) {
	if s.conn != c {
		return
	}
	until := sent.Add(LeaseTTL - leaseMargin)
	for _, ch := range chans {
		if s.confirmed[ch] { // not unsubscribed meanwhile (unconfirm)
			s.leaseMembers(ch, until)
		}
	}
}

// leaseMembers tells the members of channel that their lease holds until
// until, unless it is zero (under s.mu).
func (s *Subscription) leaseMembers(channel string, until time.Time) {
	if until.IsZero() {
		return
	}
	for _, m := range s.members[channel] {
		if m.OnLease != nil {
			m.OnLease(until)
		}
	}
	s.leases.Add(1)
}

// unregister removes the subscription's entries for chans, so that
// publishers stop waiting for it at once. It waits for at most
// unregisterTimeout: a client without ContextTimeoutEnabled ignores the
// context's deadline and holds a call to a frozen Redis for its read
// timeout (5 s for this pipeline with go-redis's defaults), which every Close of a Cache
// sharing the client waited out in turn. The call left behind is one of
// s's goroutines, which the last leave waits for; once that has begun
// (s.closed), the call is made on the caller's goroutine.
func (s *Subscription) unregister(chans []string) {
	if len(chans) == 0 {
		return
	}
	done := make(chan struct{})
	call := func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil { // a dial hook's panic (see renew)
				s.panicked(p)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), unregisterTimeout)
		defer cancel()
		_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, ch := range chans {
				unregisterScript.Eval(ctx, p, []string{LiveKey(ch)}, s.id)
			}
			return nil
		})
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		call()
		return
	}
	s.wg.Go(call) // under mu: before the last leave's Wait
	s.mu.Unlock()
	t := time.NewTimer(unregisterTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
