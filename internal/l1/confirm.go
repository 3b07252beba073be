package l1

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Synchronous invalidation: a publisher that must know that every live
// subscriber dropped the keys before it returns asks for confirmations.
//
// Its message names a reply key, after a mark in the origin field
// (EncodeAsking). A receiver of an earlier version compares the origin
// with its own, never finds it equal, drops the keys as before and sends
// nothing. The PublishLive script returns the ids of the subscriptions
// whose lease in the registry of live subscribers holds (registry.go):
// those are the live subscribers, and only their processes may trust
// their L1 (lease.go). Each subscription of this version that receives
// the message, live or from the stream when it catches up after a drop
// (resume.go), hands it to every member of the channel (who drop the
// keys) and only then pushes its id on the reply key (confirmLoop). The
// publisher pops confirmations (BLMPOP) until every live id confirmed,
// or its timeout ends (Confirmer.Wait). A subscription that is not live
// trusts no L1 until it has renewed its lease, which it does only after
// it has applied every message its publisher did not wait for.

// ErrNotConfirmed is wrapped by the error of a wait in which fewer
// subscribers confirmed a message than received it.
var ErrNotConfirmed = errors.New("cacheaside: not confirmed by every instance")

// askMark separates the origin from the reply key in the origin field of
// a message asking for confirmations. Origins (a Cache's token prefix) are
// printable.
const askMark = "\x00ack\x00"

// EncodeAsking returns the message that names keys, sent by origin, and
// asks each subscriber receiving it to confirm on reply once its members
// have it.
func EncodeAsking(origin, reply string, keys []string) []byte {
	return Encode(origin+askMark+reply, keys)
}

// splitOrigin splits the origin field of a message into the sender's
// origin and the reply key it asks confirmations on ("" when it asks
// none).
func splitOrigin(field string) (origin, reply string) {
	origin, reply, _ = strings.Cut(field, askMark)
	return origin, reply
}

// askedReply returns the reply key msg asks confirmations on, or "".
func askedReply(msg string) string {
	rest, ok := strings.CutPrefix(msg, format)
	if !ok {
		return ""
	}
	field, _, ok := cutField(rest)
	if !ok {
		return ""
	}
	_, reply := splitOrigin(field)
	return reply
}

// replyTTL is how long a reply key lives after its last confirmation: a
// confirmation that arrives after its publisher stopped waiting is
// cleaned up then. (A reply key whose confirmations were all popped is
// gone at once: Redis deletes an empty list.)
const replyTTL = time.Minute

// confirmScript pushes the confirmation of subscription ARGV[2] on the
// reply key KEYS[1] and makes it expire ARGV[1] milliseconds later.
var confirmScript = redis.NewScript(`
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

// confirmTimeout bounds one round of confirmations.
const confirmTimeout = 2 * time.Second

// ask records that the message just handed to the members of its channel
// asks for a confirmation on reply, and wakes confirmLoop.
func (s *Subscription) ask(reply string) {
	s.ackMu.Lock()
	s.acks = append(s.acks, reply)
	s.ackMu.Unlock()
	select {
	case s.ackKick <- struct{}{}:
	default:
	}
}

// confirmLoop sends the confirmations asked for, those asked meanwhile
// in one pipeline, until ctx is done. A confirmation that fails is not
// retried: its publisher counts it as missing.
func (s *Subscription) confirmLoop(ctx context.Context) {
	ttl := replyTTL.Milliseconds()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ackKick:
		}
		s.ackMu.Lock()
		replies := s.acks
		s.acks = nil
		s.ackMu.Unlock()
		if len(replies) == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, confirmTimeout)
		_, _ = s.client.Pipelined(cctx, func(p redis.Pipeliner) error {
			for _, r := range replies {
				// EVAL, not EVALSHA: a pipeline cannot fall back on
				// NOSCRIPT, and the script is a few bytes.
				confirmScript.Eval(cctx, p, []string{r}, ttl, s.id)
			}
			return nil
		})
		cancel()
	}
}

// Confirmer is the publisher's side: it names reply keys and waits for
// their confirmations. It is safe for concurrent use.
type Confirmer struct {
	// Client is where confirmations are popped and the registry read.
	Client redis.UniversalClient
	// Prefix starts every reply key; it should name the sender.
	Prefix string
	// LiveKey is the registry of live subscribers of the channel
	// (registry.go): a subscription whose lease there ended while it was
	// awaited is not awaited any more. "" awaits every one until the
	// timeout.
	LiveKey string
	// Timeout bounds each wait.
	Timeout time.Duration
	// Slice bounds each BLMPOP: the server holds it that long at most, so
	// it fits in the client's read timeout, and a wait whose context ends
	// leaves behind a call of at most Slice.
	Slice time.Duration
	// Call runs fn, a Redis call for key that the server may hold for up
	// to wait (redisguard's DoWaiting).
	Call func(ctx context.Context, key string, wait time.Duration, fn func(context.Context) error) error

	seq atomic.Uint64
}

// Reply returns a new reply key.
func (c *Confirmer) Reply() string {
	return c.Prefix + strconv.FormatUint(c.seq.Add(1), 10)
}

// Wait waits until each subscription of live pushed its confirmation on
// reply, for at most the Confirmer's Timeout. It returns nil when they
// all came; otherwise an error wrapping ErrNotConfirmed that says how
// many did not, and why when ctx ended or a call failed first. A
// confirmation from a subscription not in live (it registered after the
// message was published) is ignored.
func (c *Confirmer) Wait(ctx context.Context, reply string, live []string) error {
	missing := make(map[string]bool, len(live))
	for _, id := range live {
		missing[id] = true
	}
	want := len(missing)
	checked := time.Now() // the registry's last check: the publish read it
	deadline := checked.Add(c.Timeout)
	var cause error
	for len(missing) > 0 && cause == nil {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		wait := max(min(left, c.Slice), time.Millisecond)
		need := int64(len(missing))
		var popped atomic.Pointer[[]string] // an abandoned call may still write it
		cause = c.Call(ctx, reply, wait, func(ctx context.Context) error {
			ids, err := popConfirmations(ctx, c.Client, reply, need, wait)
			popped.Store(&ids)
			return err
		})
		if ids := popped.Load(); ids != nil {
			for _, id := range *ids {
				delete(missing, id)
			}
		}
		if len(missing) > 0 && cause == nil && time.Since(checked) >= c.Slice {
			// Once a slice, not after every partial pop: confirmations
			// that trickle in cost no registry read.
			c.forgetEnded(ctx, missing)
			checked = time.Now()
		}
	}
	got := want - len(missing)
	if got >= want {
		return nil
	}
	if cause == nil {
		cause = ctx.Err()
	}
	if cause != nil {
		return fmt.Errorf("%w: %d of %d instances did not confirm (%v)", ErrNotConfirmed, want-got, want, cause)
	}
	return fmt.Errorf("%w: %d of %d instances did not confirm within %v", ErrNotConfirmed, want-got, want, c.Timeout)
}

// forgetEnded removes from missing the subscriptions whose lease in the
// registry ended: their processes stopped trusting their L1 before it
// did (lease.go), and trust it again only once they have applied every
// message sent meanwhile, this one included. A failed check removes
// none.
func (c *Confirmer) forgetEnded(ctx context.Context, missing map[string]bool) {
	if c.LiveKey == "" {
		return
	}
	ids := make([]any, 0, len(missing))
	for id := range missing {
		ids = append(ids, id)
	}
	var ended atomic.Pointer[[]string] // an abandoned call may still write it
	_ = c.Call(ctx, c.LiveKey, 0, func(ctx context.Context) error {
		scores, err := leasedScript.Run(ctx, c.Client, []string{c.LiveKey}, ids...).Slice()
		if err != nil {
			return err
		}
		var gone []string
		for i, sc := range scores {
			if sc == nil && i < len(ids) {
				gone = append(gone, ids[i].(string))
			}
		}
		ended.Store(&gone)
		return nil
	})
	if gone := ended.Load(); gone != nil {
		for _, id := range *gone {
			delete(missing, id)
		}
	}
}

// popConfirmations pops up to n confirmations from reply, waiting up to
// wait for the first, and returns the ids they carry.
func popConfirmations(ctx context.Context, rdb redis.UniversalClient, reply string, n int64, wait time.Duration) ([]string, error) {
	secs := strconv.FormatFloat(wait.Seconds(), 'f', 3, 64)
	res, err := rdb.Do(ctx, "blmpop", secs, 1, reply, "left", "count", n).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	kv, ok := res.([]any)
	if !ok || len(kv) != 2 {
		return nil, fmt.Errorf("l1: unexpected BLMPOP reply %v", res)
	}
	vals, ok := kv[1].([]any)
	if !ok {
		return nil, fmt.Errorf("l1: unexpected BLMPOP reply %v", res)
	}
	ids := make([]string, 0, len(vals))
	for _, v := range vals {
		if id, ok := v.(string); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
