// Package tagclock implements the invalidation clock of a cache prefix,
// which makes Clear O(1): one key, <prefix>{tags}:clock, holds
// "<clock>:<cleared>", where clock advances at every Clear and cleared
// is the clock of the last Clear. Every value's envelope carries the
// clock its process knew before the load began (envelope.Header.Clock);
// a value whose clock is below the last Clear's was loaded before it and
// is a miss. Redis reads of values on a single server or behind Sentinel
// read the clock key in the same MGET, so a read sent after a Clear
// returned sees its clock; on a Cluster they read instead one of the
// clock's replicas on their own node (replicas.go), all raised before a
// Clear returns. A process's Gets read it about once a millisecond, and
// Clear waits for that (lease.go).
//
// Clocks are Unix milliseconds of the Redis server, or the last clock
// plus one when that is larger, so that a clock key lost (evicted,
// deleted) and recreated (lost.go) still moves past every clock written
// before it. A lost clock key means "unknown", not "never cleared": it is
// recreated with its last Clear at the new clock, so every value stored
// before is a miss once.
package tagclock

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Key returns the clock key of prefix. It holds a string and has no TTL.
func Key(prefix string) string { return prefix + "{tags}:clock" }

// ClearMarker returns the name that a Clear of prefix publishes in place
// of value keys on the L1 feed: no value key ends like it (value keys
// end with '}').
func ClearMarker(prefix string) string { return prefix + "{tags}:clear" }

// TagKey returns the key of tag under prefix: the clock of the tag's last
// invalidation, in the clock key's slot.
func TagKey(prefix, tag string) string { return prefix + "{tags}:t:" + tag }

// Invalidate advances the clock of KEYS[1] and sets each tag key of
// KEYS[2..] to the new clock; with ARGV[1] "clear" it also records the new
// clock as the clock of the last Clear. It returns the new
// "<clock>:<cleared>". A clock it cannot read, or a key of another Redis
// type, is replaced (a Clear or InvalidateTag heals a corrupt clock). A
// missing clock key is a lost one (lost.go): the new clock, above ARGV[2]
// (the largest clock the caller knows), is also the last Clear's, so that
// an InvalidateTag does not write "never cleared" over a lost Clear.
var Invalidate = redis.NewScript(`
local c, k = 0, 0
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then
  redis.call('DEL', KEYS[1]) -- another Redis type: replace it
  v = false
end
if v then
  -- At most 15 digits (MaxClock): Lua numbers are doubles, exact to 2^53.
  local a, b = string.match(v, '^(%d%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?):(%d+)$')
  if a and #b <= 15 then c = tonumber(a); k = tonumber(b) else k = -1 end
end
if not v then
  c = tonumber(ARGV[2]) or 0
  if c > 999999999999998 then c = 0 end
  k = -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > c then c = now else c = c + 1 end
if ARGV[1] == 'clear' or k < 0 then k = c end
local s = string.format('%d:%d', c, k)
redis.call('SET', KEYS[1], s)
-- A tag key is rewritten, keeping its TTL, only where it exists: a
-- missing one already means "unknown" (CreateMissing), and a tag no value
-- carries needs none.
for i = 2, #KEYS do redis.call('SET', KEYS[i], c, 'XX', 'KEEPTTL') end
return s
`)

// MaxClock is the largest clock: 15 digits, below 2^53, so that the
// script's Lua numbers (doubles) hold it and its successor exactly. A
// larger clock (another program's data) is corrupt: were it accepted, the
// script's c + 1 would round back to it, and a Clear would not move the
// clock past the values loaded under it.
const MaxClock = 999_999_999_999_999

// ErrCorrupt is what Parse returns for a clock key that does not hold a
// clock: another program's data, or a bug. The cache then serves no value
// of the prefix from Redis until a Clear rewrites it.
var ErrCorrupt = errors.New("tagclock: clock key holds no clock")

// Parse reads the value of a clock key. ok is false when raw is nil (a
// missing key: the caller recreates it, see Ensure).
func Parse(raw []byte) (clock, cleared uint64, ok bool, err error) {
	if raw == nil {
		return 0, 0, false, nil
	}
	a, b, found := strings.Cut(string(raw), ":")
	if !found {
		return 0, 0, false, ErrCorrupt
	}
	clock, err1 := strconv.ParseUint(a, 10, 64)
	cleared, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || cleared > clock || clock > MaxClock {
		return 0, 0, false, ErrCorrupt
	}
	return clock, cleared, true, nil
}

// Memo is Parse with a memory of the last clock it parsed. Reads of values
// carry the clock key, whose value changes only at a Clear, so most reads
// find the value parsed before: two ParseUints, about 1.5% of
// the instructions of a lone Get (BenchmarkHitInstructions), and an
// allocation. Its methods are safe for concurrent use.
type Memo struct{ last atomic.Pointer[parsed] }

// parsed is a clock value Parse read without an error.
type parsed struct {
	raw            string
	clock, cleared uint64
}

// Parse returns what the package's Parse returns for raw.
func (m *Memo) Parse(raw []byte) (clock, cleared uint64, ok bool, err error) {
	if p := m.last.Load(); p != nil && raw != nil && string(raw) == p.raw {
		return p.clock, p.cleared, true, nil
	}
	clock, cleared, ok, err = Parse(raw)
	if ok {
		m.last.Store(&parsed{raw: string(raw), clock: clock, cleared: cleared})
	}
	return clock, cleared, ok, err
}

// Known is what one process knows of a prefix's clock: the largest clock
// and Clear clock it has read or made. Both only grow. Its methods are
// safe for concurrent use.
type Known struct {
	clock   atomic.Uint64
	cleared atomic.Uint64
	corrupt atomic.Bool // the latest read found the clock key unreadable, or lost (Lost)
	pending atomic.Bool // a Clear or InvalidateTag of this process may not have reached Redis

	mu       sync.Mutex
	pendAll  bool                // a Clear failed
	pendTags map[string]struct{} // tags whose InvalidateTag failed
}

// Observe records a read of the clock key; it returns ErrCorrupt for a
// value that is not a clock.
func (k *Known) Observe(raw []byte) error { return k.Record(Parse(raw)) }

// Record is Observe of a read already parsed (Parse's results), for a
// caller that looked at them first.
func (k *Known) Record(clock, cleared uint64, ok bool, err error) error {
	k.corrupt.Store(err != nil)
	if ok {
		k.Advance(clock, cleared)
	}
	return err
}

// Advance records a clock read or made by this process.
func (k *Known) Advance(clock, cleared uint64) {
	raise(&k.clock, clock)
	raise(&k.cleared, cleared)
}

func raise(a *atomic.Uint64, v uint64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

// Clock returns the largest clock known: the clock a load that begins now
// records in its value's envelope.
func (k *Known) Clock() uint64 { return k.clock.Load() }

// Lost records that the clock key (or the replica a read carried) was
// found missing and could not be recreated: until a read finds it again,
// no value is valid (its last Clear is unknown).
func (k *Known) Lost() { k.corrupt.Store(true) }

// Valid reports whether a value whose envelope carries clock was loaded
// after every Clear known, and may be served: no Clear of this process is
// pending and the clock key was readable at the last read.
func (k *Known) Valid(clock uint64) bool {
	return clock >= k.cleared.Load() && !k.corrupt.Load() && !k.pending.Load()
}

// Begin records that a Clear (all) or an InvalidateTag of tags is about
// to be sent: until Done reports it applied, Valid is false.
func (k *Known) Begin(all bool, tags []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if all {
		k.pendAll = true
	}
	for _, t := range tags {
		if k.pendTags == nil {
			k.pendTags = make(map[string]struct{})
		}
		k.pendTags[t] = struct{}{}
	}
	k.pending.Store(true)
}

// Done records that a Clear (all) or an InvalidateTag of tags reached
// Redis: what it covers is no longer pending. A Clear covers every tag.
func (k *Known) Done(all bool, tags []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if all {
		k.pendAll, k.pendTags = false, nil
	}
	for _, t := range tags {
		delete(k.pendTags, t)
	}
	k.pending.Store(k.pendAll || len(k.pendTags) > 0)
}
