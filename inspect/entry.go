package inspect

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/redis/go-redis/v9"
)

// maxShown bounds the payload bytes a report carries.
const maxShown = 4096

// Entry is what Redis holds for one key: the value, its fill lock and its
// generation (see the key layout in the cacheaside package's lock.go).
type Entry struct {
	RedisKey string `json:"redis_key"`
	// Node is the address of the Redis Cluster primary that owns the key;
	// empty on a single server.
	Node       string `json:"node,omitempty"`
	Value      Value  `json:"value"`
	Lock       Slot   `json:"lock"`
	Generation Slot   `json:"generation"`
	// Error is a Redis error that kept the keys from being read (the
	// server is down, or the read timed out).
	Error string `json:"error,omitempty"`
}

// Value is the stored value of a key.
type Value struct {
	Exists bool   `json:"exists"`
	Type   string `json:"type,omitempty"` // the Redis type: string for every entry the cache writes
	Size   int    `json:"size,omitempty"` // bytes
	PTTLMs int64  `json:"pttl_ms,omitempty"`
	// Envelope is the decoded header; nil when the bytes are not an
	// envelope this version reads.
	Envelope *Envelope `json:"envelope,omitempty"`
	// Unreadable says why the cache would treat the entry as a miss:
	// "corrupt" (not an envelope), "unknown version or flags" (written by
	// a newer or foreign writer), "another value type or codec" (its
	// fingerprint is not the cache's) or "not a string" (another Redis
	// type).
	Unreadable string `json:"unreadable,omitempty"`
	// Payload is the codec's bytes as text when they are UTF-8;
	// PayloadHex holds them otherwise, and RawHex holds the start of an
	// unreadable entry. Truncated is set when either was cut at 4 KiB.
	Payload    string `json:"payload,omitempty"`
	PayloadHex string `json:"payload_hex,omitempty"`
	RawHex     string `json:"raw_hex,omitempty"`
	Truncated  bool   `json:"truncated,omitempty"`
}

// Envelope is the header the cache stores before each value.
type Envelope struct {
	Version  int    `json:"version"`
	Flags    uint8  `json:"flags"`
	NotFound bool   `json:"not_found"` // a cached "not found" answer
	Expiry   string `json:"expiry,omitempty"`
	// ExpiresInMs is the time left to the logical expiry, negative past
	// it (the value is then stale).
	ExpiresInMs int64   `json:"expires_in_ms,omitempty"`
	Stale       bool    `json:"stale"`
	LoadTimeMs  float64 `json:"load_time_ms"`
	// Stored is when the entry was made (the end of its load) and AgeMs
	// the time since; both empty for entries written before v0.3.
	Stored string `json:"stored,omitempty"`
	AgeMs  int64  `json:"age_ms,omitempty"`
	// Clock is the prefix's invalidation clock its process knew before
	// the load (Clear, InvalidateTag), 0 when none; Tags are the tags its
	// loader set with cacheaside.Tag.
	Clock uint64   `json:"clock,omitempty"`
	Tags  []string `json:"tags,omitempty"`
	// Fingerprint names, in hex, the value type and codec of the cache
	// that wrote the entry; empty for an entry written by v0.1, which has
	// none (the cache reads it as before).
	Fingerprint string `json:"fingerprint,omitempty"`
	// CacheFingerprint is the inspected cache's own fingerprint, and
	// TypeMatches whether the entry's is the same (or absent): when it is
	// not, the entry was written by a cache of another value type or
	// codec under the same key, and this cache reads it as a miss.
	CacheFingerprint string `json:"cache_fingerprint,omitempty"`
	TypeMatches      bool   `json:"type_matches"`
}

// Slot is the fill lock or the generation of a key.
type Slot struct {
	Exists bool `json:"exists"`
	// Value is the lock holder's token (a random per-Cache prefix, a dot
	// and a sequence number) or the generation.
	Value  string `json:"value,omitempty"`
	PTTLMs int64  `json:"pttl_ms,omitempty"`
	Error  string `json:"error,omitempty"`
}

// readEntry reads and decodes the keys of the value key vkey in one round
// trip (they share a hash slot), comparing the value's fingerprint with
// fingerprint, the inspected cache's (0: unknown, not compared).
func readEntry(ctx context.Context, rdb redis.UniversalClient, vkey string, fingerprint uint32) *Entry {
	ks := protocol.KeysFor(vkey)
	e := &Entry{RedisKey: vkey}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		if n, err := cc.MasterForKey(ctx, vkey); err == nil {
			e.Node = n.Options().Addr
		}
	}
	var typ *redis.StatusCmd
	var val, lock, gen *redis.StringCmd
	var vttl, lttl, gttl *redis.DurationCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		typ, val, vttl = p.Type(ctx, ks[0]), p.Get(ctx, ks[0]), p.PTTL(ctx, ks[0])
		lock, lttl = p.Get(ctx, ks[1]), p.PTTL(ctx, ks[1])
		gen, gttl = p.Get(ctx, ks[2]), p.PTTL(ctx, ks[2])
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && isDown(typ.Err()) {
		e.Error = err.Error()
		return e
	}
	e.Value = decodeValue(typ, val, vttl, fingerprint)
	e.Lock = slot(lock, lttl)
	e.Generation = slot(gen, gttl)
	return e
}

// isDown reports whether err is a failure to reach Redis rather than an
// answer (redis.Nil or an error reply such as WRONGTYPE).
func isDown(err error) bool {
	var re redis.Error
	return err != nil && !errors.Is(err, redis.Nil) && !errors.As(err, &re)
}

// decodeValue turns the replies about the value key into a Value.
func decodeValue(typ *redis.StatusCmd, val *redis.StringCmd, ttl *redis.DurationCmd, fingerprint uint32) Value {
	var v Value
	if typ.Err() != nil || typ.Val() == "none" {
		return v
	}
	v.Exists, v.Type, v.PTTLMs = true, typ.Val(), ms(ttl)
	if v.Type != "string" {
		v.Unreadable = "not a string"
		return v
	}
	raw, err := val.Bytes()
	if err != nil {
		v.Unreadable = err.Error()
		return v
	}
	v.Size = len(raw)
	h, payload, err := envelope.Decode(raw)
	switch {
	case errors.Is(err, envelope.ErrVersion):
		v.Unreadable = "unknown version or flags"
	case err != nil:
		v.Unreadable = "corrupt"
	}
	if err != nil {
		v.RawHex, v.Truncated = hexPrefix(raw)
		if ver, ok := envelope.VersionOf(raw); ok {
			v.Envelope = &Envelope{Version: ver, Flags: uint8(h.Flags)}
		}
		return v
	}
	ver, _ := envelope.VersionOf(raw)
	v.Envelope = &Envelope{
		Version:    ver,
		Flags:      uint8(h.Flags),
		NotFound:   h.Flags&envelope.NotFound != 0,
		LoadTimeMs: float64(h.LoadTime) / float64(time.Millisecond),
	}
	v.Envelope.TypeMatches = h.Type == 0 || fingerprint == 0 || h.Type == fingerprint
	if h.Type != 0 {
		v.Envelope.Fingerprint = fmt.Sprintf("%08x", h.Type)
	}
	if fingerprint != 0 {
		v.Envelope.CacheFingerprint = fmt.Sprintf("%08x", fingerprint)
	}
	if !v.Envelope.TypeMatches {
		v.Unreadable = "another value type or codec"
	}
	v.Envelope.Clock = h.Clock
	for t := range envelope.TagsOf(h.Tags) {
		v.Envelope.Tags = append(v.Envelope.Tags, string(t))
	}
	if !h.Stored.IsZero() {
		v.Envelope.Stored = h.Stored.UTC().Format(time.RFC3339Nano)
		v.Envelope.AgeMs = time.Since(h.Stored).Milliseconds()
	}
	if !h.Expiry.IsZero() {
		left := time.Until(h.Expiry)
		v.Envelope.Expiry = h.Expiry.UTC().Format(time.RFC3339Nano)
		v.Envelope.ExpiresInMs = left.Milliseconds()
		v.Envelope.Stale = left < 0
	}
	if utf8.Valid(payload) {
		if len(payload) > maxShown {
			payload, v.Truncated = payload[:maxShown], true
		}
		v.Payload = string(payload)
	} else {
		v.PayloadHex, v.Truncated = hexPrefix(payload)
	}
	return v
}

// slot turns the replies about the lock or generation key into a Slot.
func slot(get *redis.StringCmd, ttl *redis.DurationCmd) Slot {
	switch err := get.Err(); {
	case errors.Is(err, redis.Nil):
		return Slot{}
	case err != nil:
		return Slot{Exists: true, Error: err.Error(), PTTLMs: ms(ttl)}
	}
	return Slot{Exists: true, Value: get.Val(), PTTLMs: ms(ttl)}
}

// ms returns a PTTL reply in milliseconds: -1 for a key without a TTL.
func ms(ttl *redis.DurationCmd) int64 {
	d := ttl.Val()
	if d < 0 {
		return -1 // go-redis reports -1 and -2 as themselves, not in ms
	}
	return d.Milliseconds()
}

// hexPrefix returns the hex of the first maxShown/2 bytes of b, and
// whether b was longer.
func hexPrefix(b []byte) (string, bool) {
	if len(b) > maxShown/2 {
		return hex.EncodeToString(b[:maxShown/2]), true
	}
	return hex.EncodeToString(b), false
}
