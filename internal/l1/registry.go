package l1

import (
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The registry of live subscribers: a publisher that waits for every
// live subscriber to confirm (confirm.go) must know who they are. The
// count PUBLISH returns misses a subscriber whose connection Redis has
// closed but which has not read the close yet (its reader lags, or the
// link is half-open): that process still trusts its L1, and PUBLISH does
// not count it. So each subscription keeps a lease in a sorted set per
// channel (LiveKey): member = its id, score = when the lease ends, in
// Redis TIME milliseconds. It renews the lease only while its pub/sub
// connection answers its PINGs, and its process trusts its L1 only while
// the lease holds, by its own clock, ending before Redis's entry does
// (lease.go). The publisher reads the live ids in the script that
// publishes (PublishLive), so the ids it waits for are exactly those
// whose processes may trust their L1 when the message is published.

// LiveKey returns the key of the registry of channel's live subscribers.
// It hashes to channel's slot on a Redis Cluster (the stream's, so that
// PublishLive can read it there), unless channel has a "}" but no hash
// tag, which a Cache's channel never has (prefixes have no braces).
func LiveKey(channel string) string {
	if !hasHashTag(channel) && !strings.Contains(channel, "}") {
		return "{" + channel + "}:live"
	}
	return channel + ":live"
}

// hasHashTag reports whether a Redis Cluster hashes only part of key: a
// non-empty part between its first "{" and the first "}" after it.
func hasHashTag(key string) bool {
	i := strings.IndexByte(key, '{')
	return i >= 0 && strings.IndexByte(key[i+1:], '}') > 0
}

// pruneLua is Lua that sets now to Redis's clock in milliseconds and
// drops the leases of KEYS[n] that have ended (an entry whose score is
// now has ended: its process stopped trusting its L1 before).
func pruneLua(n int) string {
	return fmt.Sprintf(`local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[%d], '-inf', now)
`, n)
}

// renewScript renews the lease of subscription ARGV[1] in the registry
// KEYS[1] for ARGV[2] milliseconds from Redis's now, and returns 1 when
// it extended a lease that still held (every message published since
// that lease began counted the subscription), 0 when it began a new one.
// The key itself outlives every lease in it by a lease, so a registry
// nobody renews goes away.
var renewScript = redis.NewScript(pruneLua(1) + `
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], 'GT', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
if held then return 1 end
return 0
`)

// leasedScript returns, for each subscription id in ARGV, the end of its
// lease in the registry KEYS[1], or nil when it has ended.
var leasedScript = redis.NewScript(pruneLua(1) + `
return redis.call('ZMSCORE', KEYS[1], unpack(ARGV))
`)

// unregisterScript removes the lease of subscription ARGV[1] from the
// registry KEYS[1]: its process left the channel, or its subscription
// dropped and its members trust no L1 until it has caught up.
var unregisterScript = redis.NewScript(`return redis.call('ZREM', KEYS[1], ARGV[1])`)

// PublishLive is Publish (feed.go) for a message that asks for
// confirmations: KEYS[2] is LiveKey(channel), and it returns {PUBLISH's
// reply, the stream's error or "", the ids of the live subscribers},
// read in the same script, so at the same instant as the PUBLISH.
var PublishLive = redis.NewScript(pruneLua(2) + `
local live = redis.call('ZRANGE', KEYS[2], 0, -1)
local function done(n, err) return {n, err or '', live} end
` + publishLua)

// PublishLiveResult reads the reply of PublishLive: the ids of the live
// subscribers, and nil, an error wrapping ErrFeedBroken or err as
// PublishResult.
func PublishLiveResult(reply any, err error) (live []string, _ error) {
	if err != nil {
		return nil, err
	}
	r, ok := reply.([]any)
	if !ok || len(r) != 3 {
		return nil, fmt.Errorf("l1: unexpected publish reply %v", reply)
	}
	ids, _ := r[2].([]any)
	for _, id := range ids {
		if s, ok := id.(string); ok {
			live = append(live, s)
		}
	}
	if e, _ := r[1].(string); e != "" {
		return live, fmt.Errorf("%w: %v", ErrFeedBroken, e)
	}
	return live, nil
}
