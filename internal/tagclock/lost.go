package tagclock

import "github.com/redis/go-redis/v9"

// A lost clock: under an allkeys-* eviction policy, a DEL, a FLUSHDB or a
// restart from an older snapshot, the clock key (or a Cluster replica of
// it) can vanish. Read as "never cleared", it would make the values stored
// before an earlier Clear current again for every process that had not
// read that Clear. So a missing clock means "unknown", as a missing tag
// key does (Unknown): the first reader to find it missing recreates it
// with its last Clear at the new clock (Ensure), which makes every value
// stored before a miss, once; the next readers find it and keep their
// values. A fresh prefix, which never had a clock, gets its clock at its
// first read, before any value of it is loaded: nothing reloads.

// Ensure returns the clock key KEYS[1]'s value, first creating it when it
// is missing (as SET NX would), or rewriting it when it holds a clock
// below ARGV[1] (set back: a restart from an older snapshot, a failover
// to a lagging replica), at a new clock that is also the last Clear's:
// the Redis server's time in milliseconds, or ARGV[1] + 1 when that is
// larger (ARGV[1] is the largest clock the caller knows, so that the new
// clock is past every clock it has seen even if the server's time went
// back). A key of another Redis type (which MGET reads as missing) is
// replaced as a missing one is created; a string that is no clock is
// returned as it is (the caller counts it corrupt until a Clear).
var Ensure = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then
  redis.call('DEL', KEYS[1]) -- another Redis type: replace it, as if lost
  v = false
end
local c = tonumber(ARGV[1]) or 0
if v then
  local a = string.match(v, '^(%d+):%d+$')
  if not a or tonumber(a) >= c then return v end
end
if c > 999999999999998 then c = 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > c then c = now else c = c + 1 end
v = string.format('%d:%d', c, c)
redis.call('SET', KEYS[1], v)
return v
`)
