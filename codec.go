package cacheaside

import (
	"encoding/json"
	"hash/fnv"
	"reflect"
	"time"

	"github.com/cacheaside/cacheaside/internal/envelope"
)

// A Codec turns values into bytes for Redis and back. Implementations must
// be safe for concurrent use. Unmarshal receives a pointer to a zero V and
// must neither modify data nor keep it after it returns (as
// [encoding/json.Unmarshaler] asks): the bytes are the Redis reply's own,
// handed out without a copy.
//
// The cache calls Unmarshal only for bytes it has not just decoded: bytes
// of a key equal to those it decoded twice in a row (a hot key's, read
// again and again) get the value decoded from them before, shared as the
// callers of one key share every value the cache returns.
//
// Bytes that a codec cannot decode are treated as a miss: the value is
// reloaded and overwritten, and the event is counted in [Stats].Corrupt.
// So is an entry written by a cache of another value type or codec: the
// envelope names both (see the package documentation's key layout).
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default [Codec]: encoding/json, readable with redis-cli and
// from any language. It is the interoperable baseline; plug in a binary
// codec (protobuf, msgpack, gob) with [WithCodec] when the values are large.
type JSON struct{}

// Marshal implements [Codec].
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements [Codec].
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// typeFingerprint names the value type V and the codec in the envelope of
// every entry a cache writes (never 0, which means "none": a v0.1 entry).
// Two caches that share keys but not V or the codec then see each other's
// entries as unreadable (a miss, counted in Stats.Corrupt) instead of
// decoding them into the wrong type.
func typeFingerprint[V any](codec Codec) uint32 {
	h := fnv.New32a()
	h.Write([]byte(reflect.TypeFor[V]().String()))
	h.Write([]byte{0})
	h.Write([]byte(reflect.TypeOf(codec).String()))
	return max(h.Sum32(), 1)
}

// decodeResult turns a Redis value into a hit and returns the envelope's
// header (logical expiry, load time). ok is false when the bytes are not a
// readable envelope or the codec rejects them: a miss. A payload of vkey
// equal to the one decoded before it (a hot key's, read again and again)
// is not decoded again: its value comes from c.decoded.
func (c *Cache[K, V]) decodeResult(vkey string, raw []byte) (r result[V], h envelope.Header, ok bool) {
	h, payload, err := envelope.Decode(raw)
	if err != nil {
		c.stats.corrupt.Add(1)
		return r, h, false
	}
	if h.Type != 0 && h.Type != c.fingerprint {
		// Written by a cache of another value type or codec under the same
		// key: never decode it into V.
		c.stats.corrupt.Add(1)
		return r, h, false
	}
	if h.Flags&envelope.NotFound != 0 {
		return result[V]{err: ErrNotFound, src: fromRedis}, h, true
	}
	v, hash, memo := c.decoded.Lookup(vkey, payload)
	if !memo {
		if err := c.unmarshal(payload, &v); err != nil {
			c.stats.corrupt.Add(1)
			return result[V]{}, h, false
		}
		c.decoded.Decoded(vkey, payload, hash, v)
	}
	return result[V]{val: v, src: fromRedis}, h, true
}

// unmarshal calls the codec and turns its panic into an error: foreign
// bytes must never crash the process.
func (c *Cache[K, V]) unmarshal(b []byte, v *V) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: stack()}
		}
	}()
	return c.cfg.codec.Unmarshal(b, v)
}

// encodeValue marshals v into an envelope that expires after ttl, loaded
// under the prefix's invalidation clock (clear.go) and tagged tags
// (encoded, tags.go).
func (c *Cache[K, V]) encodeValue(v V, took, ttl time.Duration, clock uint64, tags []byte) (env []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: stack()}
		}
	}()
	b, err := c.cfg.codec.Marshal(v)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return envelope.Append(make([]byte, 0, envelope.MaxHeader+len(tags)+len(b)), envelope.Header{LoadTime: took, Expiry: now.Add(ttl), Type: c.fingerprint, Stored: now, Clock: clock, Tags: tags}, b), nil
}
