package tagclock

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// Clock replicas, for a Redis Cluster: the clock key lives in one slot,
// and a read of values on another node cannot read it in the same round
// trip. So the clock is copied into NumReplicas keys whose hash tags are
// spread evenly over the slot space; a read carries the replica that its
// node owns, and Clear and InvalidateTag raise every replica to the clock
// they made before they return.

// NumReplicas is the number of clock replicas on a Cluster: one per block
// of 16384/NumReplicas slots, so that every node that owns at least that
// many contiguous slots owns one.
const NumReplicas = 256

// replicaTags are the hash tags of the replicas: replicaTags[i] is the
// first string "c<n>" (n = 0, 1, ...) whose slot falls in block i. The
// list is a function of the CRC16 of fixed strings only, the same in
// every process and version: changing it would make processes of two
// versions read and write different keys.
var replicaTags = func() []string {
	const block = 16384 / NumReplicas
	tags := make([]string, NumReplicas)
	left := NumReplicas
	for n := 0; left > 0; n++ {
		t := "c" + strconv.Itoa(n)
		if i := redisguard.Slot(t) / block; tags[i] == "" {
			tags[i] = t
			left--
		}
	}
	return tags
}()

// ReplicaKeys returns the keys of prefix's clock replicas, in slot order.
// Each holds a copy of the clock key's "<clock>:<cleared>", at most as
// recent as it, and has no TTL.
func ReplicaKeys(prefix string) []string {
	keys := make([]string, NumReplicas)
	for i, t := range replicaTags {
		keys[i] = prefix + "{" + t + "}:clock"
	}
	return keys
}

// Replicas are a prefix's clock replicas and the choice of the one a
// read carries. Its methods are safe for concurrent use.
type Replicas struct {
	keys   []string
	nodeOf func(key string) string // the node that owns key now, "" if unknown
	byNode sync.Map                // node address -> choice
	gen    atomic.Uint64           // bumped by Reload: every "none" is looked for again
}

// choice is what For found for a node: the replica key it owned, or none
// ("") as of slot map generation gen and time at (unix nanoseconds).
type choice struct {
	key string
	gen uint64
	at  int64
}

// RecheckNone is how long a node found to own no replica is believed to
// own none without looking again (unless Reload is called first): the
// client may load a new slot map on its own (after a MOVED), and a node
// that took a replica's slot then reads the clock key itself, a second
// round trip, for at most this long. Correct either way.
const RecheckNone = time.Second

// NewReplicas returns the replicas of prefix; nodeOf returns the address
// of the node that owns a key by the client's current slot map, without
// I/O, or "" when it does not know.
func NewReplicas(prefix string, nodeOf func(key string) string) *Replicas {
	return &Replicas{keys: ReplicaKeys(prefix), nodeOf: nodeOf}
}

// Keys returns every replica key (not to be modified).
func (r *Replicas) Keys() []string { return r.keys }

// Reload notes that the client's slot map may have changed: the next For
// of a node that owned no replica looks again.
func (r *Replicas) Reload() { r.gen.Add(1) }

// For returns a replica key that node owns by the current slot map, or ""
// when node is "" or owns none. The answer is remembered per node: a
// replica found is checked again at every call (one lookup), so that a
// slot migration changes it; "none" is believed until Reload or for
// RecheckNone, so that a node owning no replica does not scan the
// NumReplicas keys at every read.
func (r *Replicas) For(node string) string {
	if node == "" {
		return ""
	}
	gen := r.gen.Load()
	if v, ok := r.byNode.Load(node); ok {
		c := v.(choice)
		if c.key != "" && r.nodeOf(c.key) == node {
			return c.key
		}
		if c.key == "" && c.gen == gen && time.Now().UnixNano()-c.at < int64(RecheckNone) {
			return ""
		}
	}
	for _, k := range r.keys {
		if r.nodeOf(k) == node {
			r.byNode.Store(node, choice{key: k, gen: gen})
			return k
		}
	}
	r.byNode.Store(node, choice{gen: gen, at: time.Now().UnixNano()})
	return ""
}

// Raise raises the replica KEYS[1] to at least clock ARGV[1] and cleared
// ARGV[2], each part to the larger of its value and the argument, so that
// raises that cross never move a replica back. A value that is not a clock
// (or a key of another Redis type) is replaced.
var Raise = redis.NewScript(`
local c, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then
  redis.call('DEL', KEYS[1])
  v = false
end
if v then
  local a, b = string.match(v, '^(%d+):(%d+)$')
  if a then
    if tonumber(a) > c then c = tonumber(a) end
    if tonumber(b) > k then k = tonumber(b) end
  end
end
redis.call('SET', KEYS[1], string.format('%d:%d', c, k))
return 1
`)
