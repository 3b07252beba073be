package tagclock

import (
	"sync"
	"sync/atomic"
	"time"
)

// The clock's lease: how long a process may go on judging values by the
// clock it read last, without reading the clock key again.
//
// A read of values sent at time s that carried the clock key saw every
// Clear and InvalidateTag applied before it reached Redis. The process
// then trusts that clock until s + Trust by its own clock (Lease.Held):
// its reads in that window go out without the clock key (a plain GET,
// not MGET value clock). A Clear or InvalidateTag, once its clock is
// written (every replica, on a Cluster), waits Settle before it returns
// (WaitSettled). So a Get that begins after it returned, on any process,
// either reads the clock itself, or goes by a clock read sent after the
// write: a read sent before the write was sent more than Settle before
// the Get began, and Settle is twice Trust, which covers clocks running
// at rates up to twice apart (the registry's leases assume 10%:
// internal/l1). A process whose clock stops while it runs
// (a virtual machine paused and resumed without its monotonic clock
// advancing) could go by a clock up to Trust older than the pause; the
// L1's leases make the same assumption.
//
// The lease costs a Clear or InvalidateTag Settle (2 ms), less what its
// publication to the L1 feed took, and saves a lone Get the clock key's
// part of its round trip: 1.1 points of the p50 ratio to a raw GET
// (BenchmarkLoneGetPaired, docs/hitpath-benchstat.txt), as much as
// reading no clock at all.

// Trust is how long after a read carrying the clock key was sent the
// reads of a process go out without it.
const Trust = time.Millisecond

// Settle is how long a Clear or InvalidateTag waits, once its clock is
// written, before it returns.
const Settle = 2 * Trust

// Lease is a process's trust in the clock it read last. The zero value
// holds no trust. Its methods are safe for concurrent use; Held, on every
// read, takes no lock.
type Lease struct {
	until atomic.Int64 // Now before which the clock known is trusted

	mu    sync.Mutex // orders Extend and Drop
	floor int64      // reads sent before it extend nothing (Drop)
}

// Now is the time the lease is measured in: monotonic nanoseconds.
func Now() int64 { return int64(time.Since(base)) + 1 }

// base anchors Now on the monotonic clock.
var base = time.Now()

// Held reports whether the clock known may be trusted at now (Now): a
// read carrying the clock key was sent less than Trust before.
func (l *Lease) Held(now int64) bool { return now < l.until.Load() }

// Extend records that a read sent at sent (Now, taken before the read
// went out) carried the clock key, and that its clock is recorded: the
// caller records the clock first, so that whoever sees the lease held
// sees that clock too.
// Reads carry the clock only while the lease lapsed, so Extend runs a
// few times per Trust, and its lock costs the hit path nothing.
func (l *Lease) Extend(sent int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until := sent + int64(Trust); sent >= l.floor && until > l.until.Load() {
		l.until.Store(until)
	}
}

// Drop ends the trust at now (Now): reads from now on carry the clock
// key until one sent after now extends the lease again; a read sent
// before, answered later, extends nothing. For a clock found lost or
// unreadable, and for another process's Clear or InvalidateTag heard on
// the L1 feed, whose L1 drop must not be followed by a copy read by the
// clock from before it.
func (l *Lease) Drop(now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.floor = max(l.floor, now) // Drops taken in one order may lock in the other
	l.until.Store(0)
}

// WaitSettled waits until Settle has passed since written (Now, taken
// once the clock was written), so that no process trusts a clock read
// before the write any more (see above). It ignores cancellation: the
// wait is a few milliseconds, and a Clear cut short of it would return
// before its promise holds.
func WaitSettled(written int64) {
	if rest := time.Duration(written + int64(Settle) - Now()); rest > 0 {
		time.Sleep(rest)
	}
}
