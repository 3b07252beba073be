package protocol

import (
	"fmt"
	"time"
)

// Params are the timings every script call of one cache uses.
type Params struct {
	LockTTL time.Duration // life of a fill lock (extended by its holder's heartbeat)
	GenTTL  time.Duration // life of a generation after it is written or a lock is taken under it
}

// State is what the Acquire script found.
type State int64

// The replies of Acquire.
const (
	StateValue    State = 0 // a value exists: it is returned
	StateAcquired State = 1 // this caller took the lock
	StateLocked   State = 2 // someone else holds the lock
	StateFresh    State = 3 // refresh mode: someone else already refreshed the value
)

// Modes of the Acquire script.
const (
	ModeNormal  = "0" // re-read the value; take the lock if there is none
	ModeForce   = "1" // the value is unreadable: ignore it, delete it once locked
	ModeRefresh = "2" // reload a value kept in place (early refresh, stale reload)
)

// Lease is what a load needs to fill conditionally: the lock token (empty
// when the load runs without the lock) and the generation read before the
// load began. The zero Lease (Redis was unreachable) fences nothing: its
// load's result is returned but not written.
type Lease struct {
	Token string
	Gen   string
	// Replace is set when the lock was taken to reload a value kept in
	// place (early refresh, stale reload): the fill replaces that value
	// even with a not-found marker.
	Replace bool
	// HoldOnError, if not zero, is how long the lock stays held after a
	// load that failed (stale reloads: it throttles the fleet's retries
	// of a failing loader); otherwise the lock is released at once.
	HoldOnError time.Duration
}

// Known reports whether l was read from Redis, so that a fill under it can
// be fenced by its generation.
func (l Lease) Known() bool { return l.Gen != "" }

// AcquireArgs returns the ARGV of Acquire: the one place they are built,
// for single keys and batches. freshAfter matters in ModeRefresh only: the
// remaining life above which the value counts as already refreshed.
func (p Params) AcquireArgs(token, mode string, freshAfter time.Duration) []any {
	return []any{token, p.LockTTL.Milliseconds(), mode, freshAfter.Milliseconds(), p.GenTTL.Milliseconds()}
}

// ParseAcquire reads the reply of Acquire called with token. For
// StateValue it returns the raw value.
func ParseAcquire(res []any, token string) (State, string, Lease, error) {
	if len(res) < 2 {
		return 0, "", Lease{}, fmt.Errorf("cacheaside: acquire: unexpected reply %v", res)
	}
	st, _ := res[0].(int64)
	s, _ := res[1].(string)
	switch State(st) {
	case StateValue, StateFresh:
		return State(st), s, Lease{}, nil
	case StateAcquired, StateLocked:
	default:
		return 0, "", Lease{}, fmt.Errorf("cacheaside: acquire: unexpected reply %v", res)
	}
	if s == "" {
		return 0, "", Lease{}, fmt.Errorf("cacheaside: acquire: no generation in reply %v", res)
	}
	l := Lease{Gen: s}
	if State(st) == StateAcquired {
		l.Token = token
	}
	return State(st), "", l, nil
}

// FillResult is what the Fill script did.
type FillResult int64

// The replies of Fill.
const (
	FillConflict  FillResult = 0 // not written: invalidated, set or evicted since the acquire
	FillLocked    FillResult = 1 // written by the lock holder, lock released
	FillUnlocked  FillResult = 2 // written without the lock
	FillPreempted FillResult = 3 // not written: another fill got there first
)

// Stored reports whether the fill wrote its value.
func (r FillResult) Stored() bool { return r == FillLocked || r == FillUnlocked }

// FillArgs returns the ARGV of Fill for an envelope that lives px in Redis,
// filled under l: the one place they are built, for single keys and
// batches.
func FillArgs(l Lease, env []byte, px time.Duration, negative bool) []any {
	keep := "0"
	if negative && !l.Replace {
		keep = "1"
	}
	return []any{l.Token, l.Gen, env, px.Milliseconds(), keep}
}

// OverwriteArgs returns the ARGV of Overwrite: Invalidate when env is nil,
// else Set of env living px; gen is the new generation.
func (p Params) OverwriteArgs(env []byte, px time.Duration, gen string) []any {
	var val any = ""
	if env != nil {
		val = env
	}
	return []any{val, px.Milliseconds(), gen, p.GenTTL.Milliseconds()}
}

// HoldArgs returns the ARGV of Hold: keep token's lock for d.
func HoldArgs(token string, d time.Duration) []any { return []any{token, d.Milliseconds()} }
