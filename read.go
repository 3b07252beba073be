package cacheaside

import (
	"context"
	"errors"
	"strings"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/replay"
	"github.com/cacheaside/cacheaside/internal/tagclock"
	"github.com/redis/go-redis/v9"
)

// What a Redis read of a value key means, decided in one place for Get,
// GetMany, prefill and the stale re-read: a hit, a value past its logical
// expiry, a miss, an unreadable entry (corrupt, foreign or of another
// Redis type: a miss that replaces it), or a fault.

// readKind is what one Redis read of a value key means.
type readKind int

const (
	readHit        readKind = iota // a value or not-found marker to answer with
	readStale                      // a value past its logical expiry (WithStaleIfError): reload it
	readMiss                       // nothing there
	readUnreadable                 // bytes or a Redis type the cache cannot read: a miss that replaces them
	readFault                      // no answer from Redis: neither a hit nor a miss
)

// classify says what a read of a value key means, for every path that
// reads one: raw and err are the reply of a GET of vkey (see read), of one
// key of an MGET (raw nil for a missing key, err the error of its node) or
// the value an acquire found (err nil), and m the mark of the queue of
// pending invalidations taken before the read was sent (replay.go: a key
// whose invalidation is pending is a fault, not a hit). r and h are the
// decoded entry of a hit or a stale value. An unreadable entry is counted
// in Stats.Corrupt.
func (c *Cache[K, V]) classify(vkey string, m replay.Mark, raw []byte, err error) (r result[V], h envelope.Header, kind readKind) {
	raw, err = c.vet(vkey, m, raw, err)
	switch {
	case errors.Is(err, errWrongType):
		c.stats.corrupt.Add(1)
		return r, h, readUnreadable
	case errors.Is(err, redis.Nil), err == nil && raw == nil:
		return r, h, readMiss
	case err != nil:
		return r, h, readFault
	}
	r, h, ok := c.decodeResult(vkey, raw)
	switch {
	case !ok:
		return result[V]{}, h, readUnreadable
	case !c.current(h):
		// Loaded before a Clear or InvalidateTag: a miss whose load
		// replaces it.
		return result[V]{}, h, readUnreadable
	case c.isStale(r, h.Expiry):
		return r, h, readStale
	}
	return r, h, readHit
}

// errWrongType is what read returns for a value key that holds another
// Redis type than a string (a list, a hash: another program's data). It
// is an unreadable entry, which the miss path replaces under the lock;
// the guard never sees it, so it is not a Redis fault.
var errWrongType = errors.New("cacheaside: value key holds another Redis type")

// isWrongType reports whether err is Redis's WRONGTYPE reply.
func isWrongType(err error) bool {
	if err == nil {
		return false // the hit path: no allocation for errors.As
	}
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "WRONGTYPE")
}

// localCopy returns the in-process copy of vkey for a read that Redis
// could not serve, if L1 is on and has one.
func (c *Cache[K, V]) localCopy(vkey string) (result[V], bool) {
	if c.l1 == nil {
		return result[V]{}, false
	}
	return c.l1.get(vkey, false)
}

// read GETs the value key through the guard. A WRONGTYPE reply is an
// answer, not a fault: the guard sees success and read returns
// errWrongType. This is the hit path: on the inline path the reply stays
// on the stack (the closure does not escape); only a watched call, whose
// closure runs on a goroutine of the guard, puts it on the heap, in one
// object.
func (c *Cache[K, V]) read(ctx context.Context, vkey string) ([]byte, error) {
	if n, d := c.guard.Inline(vkey); n != nil {
		var rep getReply
		err := c.guard.DoInline(ctx, n, d, func(ctx context.Context) error {
			return c.get(ctx, vkey, &rep)
		})
		return rep.result(err)
	}
	return c.readWatched(ctx, vkey)
}

// readWatched is read through guard.Do: its reply escapes with the call.
func (c *Cache[K, V]) readWatched(ctx context.Context, vkey string) ([]byte, error) {
	rep := new(getReply)
	err := c.guard.Do(ctx, vkey, func(ctx context.Context) error {
		return c.get(ctx, vkey, rep)
	})
	if err != nil {
		return nil, err // rep may still be written by an abandoned call
	}
	return rep.result(nil)
}

// getReply is what read's GET wrote: the value, and whether the key held
// another Redis type.
type getReply struct {
	raw   []byte
	wrong bool
}

// result returns what read returns for the call's error err.
func (r *getReply) result(err error) ([]byte, error) {
	switch {
	case err != nil:
		return nil, err // raw may still be written by an abandoned call
	case r.wrong:
		return nil, errWrongType
	}
	return r.raw, nil
}

// get is read's Redis call: GET vkey into rep, with a WRONGTYPE reply
// noted rather than returned (an unreadable entry, not a fault). While
// the clock's lease is held (tagclock.Lease: a read carried the clock key
// less than a millisecond ago) the clock known is current enough for the
// consistency promise, and the GET goes out alone; else it carries the
// clock (getWithClock).
func (c *Cache[K, V]) get(ctx context.Context, vkey string, rep *getReply) error {
	if c.clockKey != "" {
		if now := tagclock.Now(); !c.lease.Held(now) {
			return c.getWithClock(ctx, vkey, rep, now)
		}
	}
	var err error
	rep.raw, err = c.rdb.Get(ctx, vkey).Bytes()
	rep.wrong = isWrongType(err)
	if rep.wrong {
		return nil
	}
	return err
}

// getWithClock is get reading the prefix's clock key (clear.go; on a
// Cluster the replica of vkey's node) in the same round trip: one MGET, or
// a pipeline of one per slot (guard.MGetNode). A key of another Redis
// type (MGET answers nil for it) or holding an empty string (which
// MGetNode reads as missing) is a miss, whose lock script finds the key
// unreadable and replaces it. The clock read extends the lease from sent,
// taken before the MGET went out.
func (c *Cache[K, V]) getWithClock(ctx context.Context, vkey string, rep *getReply, sent int64) error {
	var vals [2][]byte
	keys := []string{vkey, c.readClockKey(vkey)}
	if err := c.guard.MGetNode(ctx, keys, vals[:]); err != nil {
		return err
	}
	rep.raw = vals[0]
	if c.observeClock(keys[1], vals[1]) {
		c.lease.Extend(sent)
	}
	return nil
}
