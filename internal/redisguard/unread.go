package redisguard

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// A reply is counted only when the goroutine that reads it runs, and a
// process short of CPU runs it late: the network poller hands it over at
// the back of the run queue, behind every goroutine that holds the CPU
// (or it runs on the rest of another's time slice and is preempted as
// soon as it has taken the bytes), while the guard's check, woken by a
// timer, runs at once. Likewise the goroutine that is to send a call's
// request may not have run yet when the check does. A call would then be
// judged silent, or cut at its deadline unread, although the node had
// answered within the budget, or had not been asked. busy (life.go)
// catches a long run queue, not a short one of goroutines that never
// block. So before it judges a node silent, the guard asks the node's
// connections themselves:
//
//   - Was a request sent to the node a whole window ago, still without a
//     reply read (or is a dial to it that old)? If not, and the guard
//     watches every connection of the node's client (watchedAll), this
//     call's request may still wait to be sent: the call waits on.
//   - Did bytes from the node reach this process that its goroutines have
//     not read yet? Then the node answered: the call is slow, not failed.
//     On Linux, for a plain TCP connection, the kernel's count of bytes
//     received on it (TCP_INFO) beyond the bytes its reads returned tells,
//     even when a reader has taken the bytes from the socket and was
//     preempted before it returned; beneath TLS, bytes received since the
//     request went out; elsewhere, a byte waiting in the socket (a
//     non-blocking peek) does. Only a connection with a request out or a
//     read going on counts: bytes in an idle one are a FIN, a TLS alert
//     or a push, never a reply.
//
// The guard sees the connections through its dial hook (refused.go),
// which wraps each connection the client dials to the node. The wrapper
// notes when a write ends and how many bytes reads returned, keeps the
// connection in the node's set, and, when go-redis closes it (as it
// closes a connection whose read was cut at its deadline), notes whether
// a reply had arrived unread. The look at the kernel runs only when a
// call would be judged failed, and at most once per peekFor per node. A
// frozen node sends nothing, so its calls are judged as before, once the
// replies it sent before it froze have been read.

// peekFor is how long one look at a node's connections answers for
// every call judged meanwhile: under a freeze every waiting call is
// judged at about the same time.
const peekFor = int64(500 * time.Microsecond)

// conns is what a node's connections say: the ones open, the dials in
// progress, and when a connection was closed with a reply unread. It holds
// nothing of the guard, so that the client's connections do not keep a
// dropped guard alive.
type conns struct {
	mu      sync.Mutex
	open    map[*conn]struct{}
	dialing map[*int64]struct{} // the start of each dial in progress
	// silentFrom is the clock since which the node has answered none of
	// the requests that connections were closed with (go-redis closes one
	// whose read was cut), if it has answered nothing since (lastReply):
	// the calls queued for one pooled connection behind a frozen node
	// each wait only a little on the wire, but one after another.
	silentFrom int64
	// lastReply is the clock of the node's latest reply to a call of the
	// guard: it ends a silence. The node's life reads and writes this
	// cell (newNode), which belongs here so that a connection keeps
	// nothing of the guard alive.
	lastReply atomic.Int64

	// client is the go-redis client whose pools hold the node's
	// connections, when the guard knows it (watchedAll).
	client atomic.Pointer[redis.Client]

	closedUnread atomic.Int64 // clock of the latest close of a connection with a reply unread
	peekedAt     atomic.Int64 // clock of the latest look at the open ones
	seen         atomic.Bool  // what that look found
}

// conn is a connection the guard watches (see above). It exposes the
// connection it wraps through NetConn, as crypto/tls.Conn does, so that
// go-redis's health checks find the socket beneath it.
type conn struct {
	net.Conn
	cs  *conns
	tcp *net.TCPConn // the connection wrapped, when it is a plain TCP one
	// raw is the TCP connection beneath the one wrapped (TLS), if any:
	// the kernel's count of bytes received on it when the latest write
	// ended tells whether a reply has arrived since (rawAtWrite).
	raw        *net.TCPConn
	rawAtWrite atomic.Uint64

	writing  atomic.Int64  // clock of the start of the write in progress; 0: none
	wroteAt  atomic.Int64  // clock of the start of the latest write that sent bytes
	answered atomic.Int64  // the wroteAt that the latest read that returned bytes found
	got      atomic.Uint64 // bytes returned by reads
	reading  atomic.Int32  // reads in progress
}

// sysConn is a conn whose connection is a syscall.Conn (TCP, Unix): it is
// one too, so that go-redis checks it as it checks a plain socket.
type sysConn struct{ *conn }

// SyscallConn returns the raw connection beneath c.
func (c sysConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// NetConn returns the connection c wraps.
func (c *conn) NetConn() net.Conn { return c.Conn }

// Write sends a request on c and notes when it went out, by one clock
// reading taken as it starts (the clock costs more than the rest of the
// wrapper): a write the node does not take (its buffers full) counts as
// unanswered while it lasts. A goroutine preempted between that reading
// and the write makes the request look older than it is, so that its
// node may be judged silent a little early; its reply, once in, still
// makes the call slow (see unread).
func (c *conn) Write(p []byte) (int, error) {
	t := clock()
	c.writing.Store(t)
	n, err := c.Conn.Write(p)
	if n > 0 {
		if c.raw != nil {
			if r, ok := tcpReceived(c.raw); ok {
				c.rawAtWrite.Store(r)
			}
		}
		c.wroteAt.Store(t)
	}
	c.writing.Store(0)
	return n, err
}

// Read reads from c and notes what it returned.
func (c *conn) Read(p []byte) (int, error) {
	c.reading.Add(1)
	n, err := c.Conn.Read(p)
	c.reading.Add(-1)
	if n > 0 {
		c.got.Add(uint64(n))
		c.answered.Store(c.wroteAt.Load())
	}
	return n, err
}

// Close notes a reply left unread in c (a read cut at its deadline while
// the reply had arrived), then closes it.
func (c *conn) Close() error {
	now, w := clock(), c.awaiting()
	if c.busy() && c.unread() {
		note(&c.cs.closedUnread, now)
		w = 0 // answered, only not read
	}
	c.cs.forget(c, w)
	return c.Conn.Close()
}

// unread reports whether bytes reached c that its reads have not
// returned.
func (c *conn) unread() bool {
	if c.tcp != nil {
		if received, ok := tcpReceived(c.tcp); ok {
			return received > c.got.Load()
		}
	}
	if c.raw != nil && c.awaiting() != 0 {
		// Beneath TLS, bytes that arrived since the request went out are
		// its reply, whether still in the socket or taken by the TLS
		// layer and not yet returned.
		if received, ok := tcpReceived(c.raw); ok && received > c.rawAtWrite.Load() {
			return true
		}
	}
	return unread(c.Conn)
}

// awaiting returns the clock of the request that waits for its reply on
// c (or of the start of a write still going on), or 0 when none does.
func (c *conn) awaiting() int64 {
	if w := c.writing.Load(); w != 0 {
		return w
	}
	if w := c.wroteAt.Load(); w != c.answered.Load() {
		return w
	}
	return 0
}

// wrap returns nc watched as one of the node's connections.
func (cs *conns) wrap(nc net.Conn) net.Conn {
	c := &conn{Conn: nc, cs: cs}
	// Another guard's wrapper on the same client (one hook per guard)
	// passes bytes through unchanged: the TCP connection beneath it is
	// as good as a plain one.
	inner := nc
	for {
		if w, ok := inner.(sysConn); ok {
			inner = w.Conn
		} else if w, ok := inner.(*conn); ok {
			inner = w.Conn
		} else {
			break
		}
	}
	c.tcp, _ = inner.(*net.TCPConn)
	if c.tcp == nil {
		c.raw, _ = beneath[*net.TCPConn](inner)
	}
	cs.mu.Lock()
	if cs.open == nil {
		cs.open = make(map[*conn]struct{})
	}
	cs.open[c] = struct{}{}
	cs.mu.Unlock()
	if _, ok := nc.(syscall.Conn); ok {
		return sysConn{c}
	}
	return c
}

// forget drops c from the open connections, noting the request it was
// closed with unanswered, written at w (0: none), in the node's silence.
func (cs *conns) forget(c *conn, w int64) {
	cs.mu.Lock()
	delete(cs.open, c)
	if w != 0 {
		lr := cs.lastReply.Load()
		from := max(w, lr) // silent only since its latest reply
		if cs.silentFrom < lr || cs.silentFrom == 0 {
			cs.silentFrom = from // a reply came since: a new silence
		} else {
			cs.silentFrom = min(cs.silentFrom, from)
		}
	}
	cs.mu.Unlock()
}

// dial notes a dial to the node in progress until done is called.
func (cs *conns) dial() (done func()) {
	at := clock()
	cs.mu.Lock()
	if cs.dialing == nil {
		cs.dialing = make(map[*int64]struct{})
	}
	cs.dialing[&at] = struct{}{}
	cs.mu.Unlock()
	return func() {
		cs.mu.Lock()
		delete(cs.dialing, &at)
		cs.mu.Unlock()
	}
}

// watchedAll reports whether every connection of the node's client is
// one the guard watches: none was dialed before the guard was made, or
// by a client it does not know (a Ring's, a Cluster node's made before
// it). Only then does the absence of a request unanswered say that a
// call's request may not be sent yet: on a connection the guard does not
// watch it would go unseen. go-redis counts a connection in its pools a
// little before the dial hook returns and after Close, so a transient
// difference errs towards false.
func (cs *conns) watchedAll() bool {
	c := cs.client.Load()
	if c == nil {
		return false
	}
	s := c.PoolStats()
	total := int64(s.TotalConns) + int64(s.PubSubStats.Active)
	if s.PipelineStats != nil {
		total += int64(s.PipelineStats.TotalConns)
	}
	cs.mu.Lock()
	open := int64(len(cs.open))
	cs.mu.Unlock()
	return total <= open
}

// unanswered reports whether, at now, a request to the node has gone
// unanswered for at least win: a write on an open connection with no
// read on it since, or a dial in progress, or requests that connections
// were closed with, unanswered, for that long since the node's latest
// reply (silentFrom). Without one, a call judged at now may not have
// been sent yet.
func (cs *conns) unanswered(now, win int64) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if f := cs.silentFrom; f != 0 && f >= cs.lastReply.Load() && now-f >= win {
		return true
	}
	for at := range cs.dialing {
		if now-*at >= win {
			return true
		}
	}
	for c := range cs.open {
		if w := c.awaiting(); w != 0 && now-w >= win {
			return true
		}
	}
	return false
}

// replyWaiting reports whether a reply from the node reached this process
// and was not read: one has arrived on an open connection, or had on one
// closed after start (a clock value).
func (cs *conns) replyWaiting(start int64) bool {
	if cs.closedUnread.Load() >= start {
		return true
	}
	now := clock()
	if now-cs.peekedAt.Load() < peekFor {
		return cs.seen.Load()
	}
	seen := false
	cs.mu.Lock()
	for c := range cs.open {
		if c.busy() && c.unread() {
			seen = true
			break
		}
	}
	cs.mu.Unlock()
	cs.seen.Store(seen)
	cs.peekedAt.Store(now)
	return seen
}

// beneath returns the first connection that is a T, nc itself or one
// beneath the wrappers that expose their connection with NetConn (such as
// crypto/tls.Conn), at most 8 deep.
func beneath[T any](nc net.Conn) (T, bool) {
	for range 8 {
		if t, ok := nc.(T); ok {
			return t, true
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		if nc = u.NetConn(); nc == nil {
			break
		}
	}
	var zero T
	return zero, false
}

// unread reports whether bytes wait unread in nc's socket, looking
// through wrappers (TLS: the bytes of a record are a reply too).
func unread(nc net.Conn) bool {
	sc, ok := beneath[syscall.Conn](nc)
	return ok && peek(sc)
}

// busy reports whether c may hold a reply: a request on it waits for its
// reply, or a read on it is in progress. An idle pooled connection holds
// none: bytes in it are a FIN, a TLS alert or a push, never a reply.
func (c *conn) busy() bool { return c.awaiting() != 0 || c.reading.Load() != 0 }
