package l1

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/cacheaside/cacheaside/internal/refcount"
	"github.com/redis/go-redis/v9"
)

// The backplane's subscription: Invalidate and Set on one process publish
// the value keys they touched (Encode) on the channel of their prefix, and
// every other process drops them from its L1 within a round trip, together
// with the results of reads of them in flight (see Cache). When the
// subscription drops, or a reconnect is needed, the process cannot know
// what it missed, so OnDrop must mark its whole L1 unverified
// (Cache.Unverify): healthy reads then stop trusting it until entries are
// read again under the new subscription, while reads during a Redis outage
// still may use it.
//
// Every L1 of a process that uses one client shares one pub/sub
// connection (Join): it SUBSCRIBEs to the channel of each member, hands
// each message to the members of its channel, and tells every member of a
// drop. The last member to leave closes it.

// Subscription is one client's shared pub/sub connection.
type Subscription struct {
	client  redis.UniversalClient
	ctx     context.Context // ends with the last member (stop); never a caller's
	stop    context.CancelFunc
	started sync.Once
	wg      sync.WaitGroup
	kick    chan struct{} // asks sync to (un)subscribe channels

	mu        sync.Mutex
	members   map[string][]*Handler // by channel
	confirmed map[string]bool       // channels the current connection confirmed
	last      map[string]streamID   // by channel: the stream ID of the last message received, when known
	legacy    map[string]bool       // channels that received a message without an ID: never resumed
	conn      *psConn               // nil between connections
	closed    bool

	ackMu   sync.Mutex
	acks    []string      // reply keys to confirm on (confirm.go)
	ackKick chan struct{} // wakes confirmLoop

	id         string        // in the registry of live subscribers (registry.go)
	leaseKick  chan struct{} // wakes leaseLoop
	awaiting   *leaseRound   // the round whose PONG is awaited (under mu)
	registered bool          // a renewal was sent since the last drop (under mu)
	leaseSeq   atomic.Uint64 // numbers the PINGs of lease rounds
	leases     atomic.Int64  // lease rounds granted

	resumed  atomic.Int64 // subscriptions resumed from the stream
	replayed atomic.Int64 // messages handed over from the stream

	// sendMu orders the SUBSCRIBE and UNSUBSCRIBE commands sent on a
	// connection, so that the last one sent for a channel matches the
	// last change of its members.
	sendMu sync.Mutex
}

// psConn is one pub/sub connection and the channels SUBSCRIBE was sent
// for on it (under Subscription.mu).
type psConn struct {
	ps      *redis.PubSub
	on      map[string]bool
	sent    []subscribeCmd   // the SUBSCRIBEs sent (resume.go)
	pending map[string][]int // by channel: indexes in sent still to confirm it
}

// hubs holds the shared subscriptions by client.
var hubs refcount.Registry[redis.UniversalClient, *Subscription]

// Join adds h to the members of channel on client's shared subscription,
// starting it on first use, and returns the function that removes h (safe
// to call more than once). After leave returns, h is never called again;
// the last leave stops the subscription and waits for its goroutines. A
// client that is not a pointer cannot be told apart from another: it gets
// a subscription of its own. Join does no I/O.
func Join(client redis.UniversalClient, channel string, h Handler) (leave func()) {
	s, release := hubs.Acquire(client, func() *Subscription { return newSubscription(client) })
	m := &h
	s.add(channel, m)
	s.startOnce()
	s.nudge()
	return sync.OnceFunc(func() { s.leave(channel, m, release) })
}

// add adds m to channel's members, telling it at once when the channel is
// subscribed.
func (s *Subscription) add(channel string, m *Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members[channel] = append(s.members[channel], m)
	if s.confirmed[channel] {
		m.OnSubscribed()
		s.kickLease() // its lease comes with the next round
	}
}

// newSubscription builds a subscription on client; Join starts it once
// it has a member.
func newSubscription(client redis.UniversalClient) *Subscription {
	ctx, stop := context.WithCancel(context.Background())
	return &Subscription{
		client:    client,
		ctx:       ctx,
		stop:      stop,
		kick:      make(chan struct{}, 1),
		ackKick:   make(chan struct{}, 1),
		leaseKick: make(chan struct{}, 1),
		id:        newID(),
		members:   map[string][]*Handler{},
		confirmed: map[string]bool{},
		last:      map[string]streamID{},
		legacy:    map[string]bool{},
	}
}

// startOnce starts the goroutines of s, after its first member joined:
// listen then always has a channel to SUBSCRIBE before it receives. (A
// PubSub with no channel dials on its first receive, under a lock that a
// panicking dial hook leaves held, which would hang its Close forever.)
func (s *Subscription) startOnce() {
	s.started.Do(func() {
		s.wg.Go(func() { s.run(s.ctx) })
		s.wg.Go(func() { s.syncLoop(s.ctx) })
		s.wg.Go(func() { s.confirmLoop(s.ctx) })
		s.wg.Go(func() { s.leaseLoop(s.ctx) })
	})
}

// leave removes m from channel's members, and stops the subscription when
// it was the last member.
func (s *Subscription) leave(channel string, m *Handler, release func() (last bool)) {
	s.mu.Lock()
	kept := make([]*Handler, 0, len(s.members[channel]))
	for _, o := range s.members[channel] {
		if o != m {
			kept = append(kept, o)
		}
	}
	var gone []string // the registry entry to remove
	if len(kept) == 0 {
		if s.registered {
			gone = []string{channel}
		}
		delete(s.members, channel)
		delete(s.last, channel) // a later member starts afresh
		delete(s.legacy, channel)
	} else {
		s.members[channel] = kept
	}
	s.mu.Unlock()

	if !release() {
		s.unregister(gone) // publishers need not wait for this process on it
		s.nudge()          // unsubscribe a channel nobody listens to any more
		return
	}
	s.mu.Lock()
	s.closed = true
	c := s.conn
	s.mu.Unlock()
	s.stop()
	if c != nil {
		_ = c.ps.Close()
	}
	s.wg.Wait()
	s.unregister(gone) // after leaseLoop ended: nothing renews it again
}

// nudge asks syncLoop to bring the subscribed channels in line with the
// members. It never blocks.
func (s *Subscription) nudge() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// syncLoop subscribes the channels that gained members and unsubscribes
// those that lost them, on the current connection, when nudged.
func (s *Subscription) syncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.sync(ctx)
	}
}

// sync sends the SUBSCRIBE and UNSUBSCRIBE commands the current
// connection lacks. A failed command is not retried: it failed on a
// broken connection, which sync closes, and run replaces with one
// subscribed to every channel. (go-redis redials inside the PubSub when a
// command fails, subscribed only to the channels it had before that
// command and without a word to us: when listen is not receiving at that
// moment, say while it resumes a channel, it would carry on on the new
// connection, its members never told of what they missed, the command's
// channels never subscribed.)
func (s *Subscription) sync(ctx context.Context) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	defer func() {
		// A command may dial (go-redis redials a broken connection)
		// through the client's hooks, which may panic: the subscription
		// then fails like on a broken connection, never the process.
		if p := recover(); p != nil {
			s.panicked(p)
		}
	}()
	s.mu.Lock()
	c := s.conn
	var add, drop []string
	if c != nil {
		for ch := range s.members {
			if !c.on[ch] {
				add = append(add, ch)
				c.on[ch] = true
			}
		}
		if len(add) > 0 {
			c.sentSubscribe(add)
		}
		for ch := range c.on {
			if len(s.members[ch]) == 0 {
				drop = append(drop, ch)
				delete(c.on, ch)
			}
		}
	}
	s.mu.Unlock()
	var err error
	if len(add) > 0 {
		err = c.ps.Subscribe(ctx, add...)
	}
	if len(drop) > 0 && err == nil {
		err = c.ps.Unsubscribe(ctx, drop...)
	}
	if err != nil {
		_ = c.ps.Close() // listen's receive fails: a drop (see above)
	}
}
