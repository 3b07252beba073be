package protocol

import "github.com/redis/go-redis/v9"

// The scripts below are the whole protocol between the processes of a
// fleet. Each touches the three keys of one cache key (value, lock,
// generation; see keys.go), which share a hash tag, so each runs on one
// Redis Cluster slot. go-redis's Script.Run sends EVALSHA and falls back to
// EVAL on NOSCRIPT, so a Redis that restarted without its script cache
// costs one extra round trip, not an error.

// Acquire re-reads the value and, if there is none, tries to take the
// fill lock. ARGV[1] is the caller's token, ARGV[2] the lock TTL and
// ARGV[5] the generation TTL, in milliseconds. It returns {0, value} when
// a value exists, {1, gen} when this caller took the lock, and {2, gen}
// when someone else holds it.
//
// gen is the fence of a later conditional fill (Fill): the key's
// generation, which the script creates when there is none (with the
// caller's token: unique, so a generation never comes back once replaced,
// expired or evicted). Every lease thus carries a generation, and a fill
// that no longer finds it is refused. Taking the lock also extends the
// generation to the generation TTL, so that it outlives any load that
// relies on it. A generation of another Redis type than a string (no
// process wrote it) is replaced like a missing one.
//
// A lock key that no process of the cache wrote (one without a TTL, which
// every lock taken here has, or of another Redis type) would never be
// released: it is taken over as if free.
//
// ARGV[3] is the mode: "0" normal (a value of another Redis type than a
// string is unreadable: it is treated as in mode "1"); "1" the existing
// value is ignored (it was unreadable) and deleted once the lock is taken;
// "2" (early refresh) the existing value is ignored and kept, so readers
// go on getting it during the load, unless it lives longer than ARGV[4]
// ms: then another process refreshed it since the caller read it, and the
// reply is {3, ""}.
var Acquire = redis.NewScript(`
local mode = ARGV[3]
if mode == '0' then
  local v = redis.pcall('GET', KEYS[1])
  if type(v) == 'string' then return {0, v} end
  if type(v) == 'table' and v.err then mode = '1' end
elseif mode == '2' and redis.call('PTTL', KEYS[1]) > tonumber(ARGV[4]) then
  return {3, ''}
end
local g = redis.pcall('GET', KEYS[3])
if type(g) ~= 'string' then
  g = ARGV[1]
  redis.call('SET', KEYS[3], g, 'PX', ARGV[5])
end
local took = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
if not took and (redis.call('PTTL', KEYS[2]) == -1 or redis.call('TYPE', KEYS[2]).ok ~= 'string') then
  took = redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
if took then
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  if mode == '1' then redis.call('DEL', KEYS[1]) end
  return {1, g}
end
return {2, g}
`)

// Fill writes a loaded value only if nothing invalidated the key since
// the load began: the generation must still be ARGV[2], the one the
// acquire gave the load. Invalidate and Set replace the generation, and an
// evicted or expired one never comes back (Acquire), so a fill after
// any of them is refused, whatever else Redis evicted. The lock token
// ARGV[1] (empty for a load without the lock) only chooses how to write:
// the holder overwrites and releases the lock; any other load writes only
// if no value exists. With ARGV[5] = "1" the holder too keeps an existing
// value: a not-found marker from a load that began on a miss must not hide
// a row that a load begun later found and stored. (A refresh or stale
// reload passes "0": the value it finds is the one it reloads, and a row
// deleted since must replace it.) A refused fill still releases the
// caller's lock, so that a redo or another process can take it at once.
//
// It returns 1 (written, lock released), 2 (written without the lock),
// 3 (not written: another fill got there first, the load is still fresh)
// or 0 (not written: the key was invalidated or set during the load, or
// its generation evicted).
var Fill = redis.NewScript(`
local mine = ARGV[1] ~= '' and redis.pcall('GET', KEYS[2]) == ARGV[1]
if redis.pcall('GET', KEYS[3]) ~= ARGV[2] then
  if mine then redis.call('DEL', KEYS[2]) end
  return 0
end
if mine then
  if ARGV[5] == '1' then
    redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[4])
  else
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  end
  redis.call('DEL', KEYS[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[4]) then return 2 end
return 3
`)

// Release deletes the lock only if it still holds this caller's
// token: compare-and-delete, never a plain DEL.
var Release = redis.NewScript(`
if redis.pcall('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
`)

// Hold extends the lock to ARGV[2] ms if it still holds token ARGV[1].
var Hold = redis.NewScript(`
if redis.pcall('GET', KEYS[2]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
`)

// Overwrite is Invalidate (ARGV[1] = "") and Set (ARGV[1] = the new
// envelope, ARGV[2] its PX): it replaces or deletes the value, deletes the
// lock so that an in-flight fill fails its condition, and writes a new
// generation ARGV[3] that lives ARGV[4] ms.
var Overwrite = redis.NewScript(`
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1
`)
