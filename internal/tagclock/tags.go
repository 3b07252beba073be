package tagclock

import (
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// MaxVersions bounds the tag versions a process keeps; past it the map
// starts again empty.
const MaxVersions = 4096

// Versions is what one process knows of the versions of a prefix's tags
// (the clock of each tag's last invalidation), all read as of one clock:
// a value loaded at clock L and tagged t is current if t's version as of
// a clock at least the read's is at most L. While the clock does not
// move, the versions read once serve every read. Its methods are safe for
// concurrent use.
type Versions struct {
	mu   sync.RWMutex
	asOf uint64            // the clock the versions were read at
	m    map[string]uint64 // tag -> version as of asOf
}

// Lookup returns the version of tag as of a clock of at least clock, if
// known.
func (v *Versions) Lookup(tag []byte, clock uint64) (uint64, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.asOf < clock {
		return 0, false
	}
	ver, ok := v.m[string(tag)]
	return ver, ok
}

// Store records the versions of tags read at clock asOf (raws[i] the raw
// value of tags[i]'s key, nil when missing). A missing key or a value
// that is not a clock is a version newer than any (ParseVersion).
func (v *Versions) Store(asOf uint64, tags []string, raws [][]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if asOf < v.asOf {
		return // a read older than what is known
	}
	if asOf > v.asOf || v.m == nil || len(v.m)+len(tags) > MaxVersions {
		v.asOf, v.m = asOf, make(map[string]uint64, len(tags))
	}
	for i, t := range tags {
		v.m[t] = ParseVersion(raws[i])
	}
}

// Unknown is the version of a tag whose key is missing or holds no
// clock: newer than any, so that every value carrying the tag is stale.
// A missing key may have been evicted or deleted after an InvalidateTag:
// it does not mean "never invalidated". The next fill of a value with the
// tag recreates it (CreateMissing); a key that holds no clock stays
// until an InvalidateTag rewrites it.
const Unknown = ^uint64(0)

// ParseVersion reads the value of a tag key: Unknown when it is missing or
// not a clock.
func ParseVersion(raw []byte) uint64 {
	if raw == nil {
		return Unknown
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return Unknown
	}
	return n
}

// CreateMissing reads the clock key KEYS[1] and the tag keys KEYS[2..],
// like one MGET, after setting each missing tag key (SET NX) to the
// larger of the clock key's clock and ARGV[1], the clock a load began
// at. A fill calls it before it writes a value tagged with KEYS[2..]: the
// value is current when each version returned is at most its load's
// clock. A missing tag key (never invalidated, or evicted) is thus
// recreated no older than any invalidation the clock key records: values
// of the tag loaded before are misses once (conservative), and the fill
// is refused when the clock moved during its load (the key may have
// recorded an invalidation since). A clock key that holds no clock
// counts as ARGV[1]'s. ARGV[2], when above 0, is the physical TTL in
// milliseconds of the value being filled: every tag key is kept at least
// that long (PX on creation, PEXPIRE GT after; a key without a TTL keeps
// none), so a tag key lives as long as a value that carries it and no
// longer, instead of accumulating for every tag ever used. A tag key that
// expires early is only "unknown": its values reload once. A missing
// clock key is recreated as by Ensure, at a clock above ARGV[1].
var CreateMissing = redis.NewScript(`
local v = redis.call('MGET', unpack(KEYS))
local c = tonumber(ARGV[1])
if v[1] then
  local a = string.match(v[1], '^(%d%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?):%d+$')
  if a and tonumber(a) > c then c = tonumber(a) end
else
  -- The clock key is lost: recreate it as Ensure does, above the load's
  -- clock, so that this fill (loaded before) is refused.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now > c then c = now else c = c + 1 end
  v[1] = string.format('%d:%d', c, c)
  redis.call('SET', KEYS[1], v[1])
end
local s = string.format('%d', c)
local px = tonumber(ARGV[2]) or 0
for i = 2, #KEYS do
  if not v[i] then
    local ok
    if px > 0 then ok = redis.call('SET', KEYS[i], s, 'NX', 'PX', px) else ok = redis.call('SET', KEYS[i], s, 'NX') end
    if ok then v[i] = s end
  elseif px > 0 then
    redis.call('PEXPIRE', KEYS[i], px, 'GT')
  end
end
return v
`)
