package l1

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The feed makes invalidations durable: each message is appended to a
// Redis Stream named like its channel (XADD, trimmed to about Retention
// entries) and published with the entry's ID, both in one script, so a
// subscriber knows the ID of the last message it received. After a drop
// it reads the entries it missed from the stream (XRANGE after that ID)
// and hands them to its members before they trust their L1 again
// (Handler.OnResumed), instead of distrusting everything they hold. It
// distrusts (Handler.OnSubscribed) only when it cannot know what it
// missed: entries after its ID were trimmed away (it fell behind the
// retained log), the stream is gone or went backwards (flushed, evicted,
// restarted empty, or a failover lost its last entries), or the read
// failed.
//
// On a Redis Cluster the stream of a channel lives on the node of its
// key's hash slot; PUBLISH from the script reaches subscribers on every
// node. When that node fails over, entries its replica had not received
// are lost: a subscriber that received them finds the stream behind its
// ID and distrusts its L1; one that missed them while disconnected
// cannot know, as with any asynchronous replication.

// Retention is about how many invalidation messages each stream keeps
// (XADD MAXLEN ~, so Redis may keep somewhat more): a subscriber
// disconnected while more were sent distrusts its whole L1 on its return.
const Retention = 10_000

// Publish appends a message to the stream KEYS[1] (trimmed to about
// ARGV[1] entries) and publishes it on channel ARGV[3] wrapped with the
// entry's ID (Wrap's format), returning PUBLISH's reply: the number of
// subscriber connections that received it (on a Cluster, those of the
// node that ran the script only). IDs are under 128 bytes, so their
// length is one uvarint byte. When the key cannot take the entry because
// another program stored another type under it (WRONGTYPE), the message
// is published without an ID, as an earlier version sent it, and the
// script returns {PUBLISH's reply, the error}: the message still reaches
// every subscriber, which then stops trusting the stream for the channel
// (deliver), and the publisher reports a broken feed (ErrFeedBroken)
// rather than a failed publish, which would be retried forever. Any other
// error (a missing permission, an out-of-memory reply) fails the script
// before anything is published: the change is queued and replayed.
var Publish = redis.NewScript(`
local function done(n, err)
  if err then return {n, err} end
  return n
end
` + publishLua)

// publishLua is the body of Publish and PublishLive (registry.go): it
// appends and publishes, and returns done(PUBLISH's reply, the stream's
// error or nil).
const publishLua = `
local id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[2])
if type(id) == 'table' and id.err then
  if string.sub(id.err, 1, 9) ~= 'WRONGTYPE' then
    return id
  end
  return done(redis.call('PUBLISH', ARGV[3], ARGV[2]), id.err)
end
return done(redis.call('PUBLISH', ARGV[3], '` + wrapFormat + `' .. string.char(#id) .. id .. ARGV[2]), nil)
`

// ErrFeedBroken is the error of PublishResult when the message was
// published but not appended to the channel's stream: subscribers that
// drop their subscription cannot catch up and distrust their L1.
var ErrFeedBroken = errors.New("cacheaside: invalidation stream unusable; message published without it")

// PublishResult reads the reply of Publish: the number of subscriber
// connections that received the message, and nil when it was appended and
// published, an error wrapping ErrFeedBroken when it was only published
// (the stream's key holds another type), else err, the call's error (the
// message was not published).
func PublishResult(reply any, err error) (receivers int64, _ error) {
	if err != nil {
		return 0, err
	}
	if r, ok := reply.([]any); ok && len(r) == 2 {
		n, _ := r[0].(int64)
		return n, fmt.Errorf("%w: %v", ErrFeedBroken, r[1])
	}
	n, _ := reply.(int64)
	return n, nil
}

// PublishArgs returns the ARGV of Publish for msg (Encode's) on channel.
func PublishArgs(channel string, msg []byte) []any {
	return []any{Retention, msg, channel}
}

// wrapFormat starts a published message that carries its stream entry's
// ID: wrapFormat, uvarint len(id), id, then the message (Encode's). The
// NUL bytes are written as Lua escapes in Publish.
const wrapFormat = `\0inv-id\0`

// wrapPrefix is wrapFormat as the bytes Lua writes.
const wrapPrefix = "\x00inv-id\x00"

// Unwrap splits a published message into its stream entry's ID and the
// message. A message without an ID (sent by an earlier version) is
// returned whole with an empty ID.
func Unwrap(payload string) (id, msg string, ok bool) {
	rest, wrapped := strings.CutPrefix(payload, wrapPrefix)
	if !wrapped {
		return "", payload, true
	}
	id, msg, ok = cutField(rest)
	if !ok || !validID(id) {
		return "", "", false
	}
	return id, msg, true
}

// streamID is a parsed stream entry ID: milliseconds and sequence.
type streamID struct{ ms, seq uint64 }

// parseID parses "<ms>-<seq>".
func parseID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return streamID{}, false
	}
	return streamID{ms, seq}, true
}

func validID(s string) bool { _, ok := parseID(s); return ok }

// less orders IDs as Redis does.
func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq)
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// errBehind is missed's error when the stream cannot tell what was
// missed.
var errBehind = errors.New("l1: the invalidation stream no longer holds what was missed")

// streamRead is what one round trip reads of a channel's stream on a
// (re)subscription: its XINFO STREAM and, when the last ID received is
// known, its entries after that ID.
type streamRead struct {
	info  *redis.XInfoStreamCmd
	rng   *redis.XMessageSliceCmd // nil: no known ID
	after streamID
}

// readStreams reads the streams of channels in one pipelined round trip
// (one per node on a Cluster): each one's XINFO STREAM, and its entries
// after the ID in after, for the channels that have one. With an id, it
// first renews that subscription's lease in each channel's registry
// (registry.go; same node as the stream), and reports whether every
// renewal succeeded: a message published before a renewal landed is in
// the stream read after it, one published after is waited for.
func readStreams(ctx context.Context, rdb redis.UniversalClient, channels []string, after map[string]streamID, id string) (_ map[string]*streamRead, renewed bool) {
	reads := make(map[string]*streamRead, len(channels))
	var renewals []*redis.Cmd
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ch := range channels {
			if id != "" {
				// EVAL: a pipeline cannot fall back on NOSCRIPT.
				renewals = append(renewals, renewScript.Eval(ctx, p, []string{LiveKey(ch)}, id, LeaseTTL.Milliseconds()))
			}
			r := &streamRead{info: p.XInfoStream(ctx, ch)}
			if a, ok := after[ch]; ok {
				r.after = a
				r.rng = p.XRangeN(ctx, ch, "("+a.String(), "+", Retention*2)
			}
			reads[ch] = r
		}
		return nil
	}) // each command's own error is read below
	renewed = id != ""
	for _, c := range renewals {
		renewed = renewed && c.Err() == nil
	}
	return reads, renewed
}

// missed returns the messages of the stream after r.after, in order, and
// the ID of the last one (r.after itself when there is none). It fails
// with errBehind when entries after r.after were trimmed away, or the
// stream is missing or behind r.after (flushed, evicted, or a failover
// lost entries).
func (r *streamRead) missed() (msgs []string, last streamID, err error) {
	after := r.after
	if err := r.info.Err(); err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return nil, after, errBehind // lost (a known ID is never the zero one: start)
		}
		return nil, after, err
	}
	if err := r.rng.Err(); err != nil {
		return nil, after, err
	}
	if !covers(r.info.Val(), after) {
		return nil, after, errBehind
	}
	last = after
	for _, m := range r.rng.Val() {
		id, ok := parseID(m.ID)
		s, isStr := m.Values["m"].(string)
		if !ok || !isStr {
			return nil, after, errBehind // not ours: it may have named any key
		}
		msgs, last = append(msgs, s), id
	}
	if len(r.rng.Val()) == Retention*2 {
		return nil, after, errBehind // more than one read's worth: treat as behind
	}
	return msgs, last, nil
}

// covers reports whether a stream described by st still holds every
// entry after ID after. Trimming removes the oldest entries, so it does
// when nothing was added after after, when its first entry is not after
// after, or, from the zero ID, when nothing was ever trimmed; an entry
// after after deleted by XDEL means it does not.
func covers(st *redis.XInfoStream, after streamID) bool {
	top, ok1 := parseID(st.LastGeneratedID)
	deleted, ok2 := parseID(st.MaxDeletedEntryID)
	if !ok1 || !ok2 || top.less(after) || after.less(deleted) {
		return false // went backwards (flushed, failed over), or XDEL after it
	}
	if top == after {
		return true
	}
	if first, ok := parseID(st.FirstEntry.ID); ok && !after.less(first) {
		return true
	}
	return after == (streamID{}) && st.EntriesAdded == st.Length
}

// start returns the ID of the last entry of the stream: a new starting
// point for the subscription. known is false when the stream is missing
// or has never had an entry: its ID would be the zero ID, which a stream
// lost and written again (flushed, evicted, Redis restarted empty) would
// seem to cover, so the subscription learns its starting point from the
// first message it receives instead (deliver).
func (r *streamRead) start() (id streamID, known bool, err error) {
	info, err := r.info.Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return streamID{}, false, nil
		}
		return streamID{}, false, err
	}
	id, ok := parseID(info.LastGeneratedID)
	if !ok {
		return streamID{}, false, errBehind
	}
	return id, id != (streamID{}), nil
}
