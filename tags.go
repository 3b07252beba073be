package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// Tags: a loader tags its result with Tag; InvalidateTag makes every value
// carrying one of the tags and loaded before the call a miss. Each tag has
// a version, the prefix's clock (clear.go) at its last invalidation, in
// one key of the clock's slot; a value loaded at clock L is current when
// each of its tags' versions is at most L. A read that finds the clock
// where the value's load left it needs nothing more; after an
// InvalidateTag, the versions of the tags read are fetched once per clock
// value (one MGET) and kept (tagclock.Versions).

// Bounds of Tag.
const (
	// MaxTags is the most tags one value may carry.
	MaxTags = 16
	// MaxTagLen is the longest tag, in bytes.
	MaxTagLen = 128
)

// ErrBadTag is returned by InvalidateTag for an empty tag or one longer
// than MaxTagLen.
var ErrBadTag = errors.New("cacheaside: tag empty or longer than MaxTagLen")

// Tag, called by a LoadFunc or BatchLoadFunc with the context it was
// given, tags the result it is about to return, so that
// [Cache.InvalidateTag] of any of the tags invalidates it. A batch
// loader's call tags every value of the batch. Calls add up; a tag given
// twice counts once. A result with an empty tag, a tag longer than
// [MaxTagLen] bytes or more than [MaxTags] tags is returned but not cached
// (and logged). Outside a loader Tag does nothing. A value stored with
// [Cache.Set] carries no tags.
func Tag(ctx context.Context, tags ...string) {
	s, ok := ctx.Value(loadScopeKey{}).(*loadScope)
	if !ok {
		return
	}
	for _, t := range tags {
		s.tags.add(t)
	}
}

// tagList is the tags a loader set, encoded for the envelope.
type tagList struct {
	enc  []byte
	seen []string
	n    int  // tags given, duplicates included
	bad  bool // a tag or their number breaks the bounds
}

func (l *tagList) add(t string) {
	l.n++
	if !validTag(t) || len(l.seen) >= MaxTags && !slices.Contains(l.seen, t) {
		l.bad = true
		return
	}
	if slices.Contains(l.seen, t) {
		return
	}
	l.seen = append(l.seen, t)
	l.enc = envelope.AppendTag(l.enc, t)
}

func validTag(t string) bool { return t != "" && len(t) <= MaxTagLen }

// InvalidateTag makes every value of this Cache's prefix that carries one
// of tags and was loaded before the call a miss, on every process, with
// Invalidate's promise: once it has returned nil, no Get or GetMany
// started afterwards returns such a value from Redis, and a load in flight
// during the call writes nothing that is served afterwards. It costs one
// script on one Redis slot, O(len(tags)), whatever the number of tagged
// values. It drops this process's whole in-process cache and detaches its
// flights, and the other processes drop theirs when the feed's message
// reaches them (the in-process cache does not know the tags of its
// entries). Tag keys have no TTL: one small key per tag ever filled or
// invalidated. A tag key lost (evicted under allkeys-lru, deleted) makes
// every value of the tag loaded before a miss once, never current again
// (tagclock.Unknown).
//
// When Redis cannot be written, InvalidateTag returns an error, which
// matches [ErrRedisUnavailable] when Redis was unavailable; this process
// then serves no Redis copy of the prefix until an InvalidateTag of the
// same tags, or a Clear, succeeds (call it again). It is not queued for
// replay. It returns [ErrBadTag] for an empty or too long tag. On a Redis
// Cluster it also raises the clock's replicas, as Clear does. Like Clear,
// it returns no sooner than 2 ms after the clock is written (see Clear):
// invalidate many tags in one call, not one call per tag.
func (c *Cache[K, V]) InvalidateTag(ctx context.Context, tags ...string) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	if len(tags) == 0 {
		return nil
	}
	keys := make([]string, 0, len(tags)+1)
	keys = append(keys, c.clockKey)
	for _, t := range tags {
		if !validTag(t) {
			return fmt.Errorf("cacheaside: invalidate tag %.20q: %w", t, ErrBadTag)
		}
		keys = append(keys, tagclock.TagKey(c.cfg.prefix, t))
	}
	return c.advanceClock(ctx, "invalidate tag", keys, "tags", tags)
}

// tagsCurrent reports whether a value loaded at clock with tags may be
// served: no tag of it was invalidated after clock, as of a clock at
// least the one this process knows (read with the value). It fetches the
// versions it does not know in one MGET; when that fails the value is not
// current (a miss: the load replaces it).
func (c *Cache[K, V]) tagsCurrent(clock uint64, tags []byte) bool {
	known := c.clock.Clock()
	var missing []string
	for t, rest, ok := envelope.NextTag(tags); ok; t, rest, ok = envelope.NextTag(rest) {
		v, ok := c.versions.Lookup(t, known)
		if !ok {
			missing = append(missing, string(t))
		} else if v > clock {
			return false
		}
	}
	if len(missing) == 0 {
		return true
	}
	// The Cache's lifetime, under the guard's Redis timeout: classify,
	// which calls this, runs under no context of its own.
	vers, err := c.fetchVersions(c.life, missing)
	if err != nil {
		return false
	}
	for _, v := range vers {
		if v > clock {
			return false
		}
	}
	return true
}

// fetchVersions reads the clock and the versions of tags in one MGET on
// the clock's slot, records them, and returns the versions.
func (c *Cache[K, V]) fetchVersions(ctx context.Context, tags []string) ([]uint64, error) {
	return c.readVersions(ctx, tags, func(ctx context.Context, keys []string, raws [][]byte) error {
		return c.guard.MGetNode(ctx, keys, raws)
	})
}

// fetchVersionsForFill is fetchVersions for the fill of a value loaded at
// clock: in one script on the clock's slot, it first recreates the
// missing tag keys at the clock (tagclock.CreateMissing), so that a tag
// whose key was evicted is not "never invalidated" and its new values
// are current; keep, the physical TTL of the values filled, is how long
// the tag keys are kept at least.
func (c *Cache[K, V]) fetchVersionsForFill(ctx context.Context, clock uint64, tags []string, keep time.Duration) ([]uint64, error) {
	return c.readVersions(ctx, tags, func(ctx context.Context, keys []string, raws [][]byte) error {
		res, err := tagclock.CreateMissing.Run(ctx, c.rdb, keys, clock, keep.Milliseconds()).Slice()
		if err != nil {
			return err
		}
		if len(res) != len(raws) {
			return fmt.Errorf("cacheaside: tag versions: %d replies for %d keys", len(res), len(raws))
		}
		for i, r := range res {
			if s, ok := r.(string); ok {
				raws[i] = []byte(s)
			}
		}
		return nil
	})
}

// readVersions reads the clock key and the keys of tags with read, under
// the clock key's breaker and budget, records them, and returns the
// versions.
func (c *Cache[K, V]) readVersions(ctx context.Context, tags []string, read func(ctx context.Context, keys []string, raws [][]byte) error) ([]uint64, error) {
	keys := make([]string, len(tags)+1)
	keys[0] = c.clockKey
	for i, t := range tags {
		keys[i+1] = tagclock.TagKey(c.cfg.prefix, t)
	}
	raws := make([][]byte, len(keys))
	err := c.guard.Do(ctx, c.clockKey, func(ctx context.Context) error {
		return read(ctx, keys, raws)
	})
	if err != nil {
		c.redisError(err)
		return nil, err
	}
	c.observeClock(c.clockKey, raws[0])
	clock, _, _, _ := tagclock.Parse(raws[0])
	c.versions.Store(clock, tags, raws[1:])
	vers := make([]uint64, len(tags))
	for i, raw := range raws[1:] {
		vers[i] = tagclock.ParseVersion(raw)
	}
	return vers, nil
}
