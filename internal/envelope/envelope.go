// Package envelope implements the versioned wire format that wraps every
// value the cache stores in Redis.
//
// Layout of version 1:
//
//	byte 0      magic 0xCA
//	byte 1      version (1)
//	byte 2      flags
//	uvarint     n, the length of the header fields that follow
//	n bytes     header fields: varint expiry (Unix ms, 0 = none),
//	            uvarint load duration (µs), uvarint type fingerprint
//	            (0 = none; written since v0.2), varint time the entry
//	            was made (Unix ms, 0 = unknown; written since v0.3),
//	            uvarint invalidation clock read before the load (0 =
//	            none; written since v0.3, see Header.Clock), uvarint
//	            m and m bytes of tags, each a uvarint length and its
//	            bytes (written since v0.3 when the value has tags);
//	            later versions may append more
//	rest        the codec's bytes (empty for a not-found marker)
//
// Readers decode the header fields they know and skip the rest of the n
// bytes, so a field added later is ignored by older readers and a rolling
// deploy never makes two versions see each other's entries as corrupt. The
// version changes only for an incompatible layout. Flags in the low four
// bits change the meaning of the payload: a reader that finds one it does
// not know must treat the entry as unreadable. Flags in the high four bits
// are hints that may be ignored.
//
// The type fingerprint names the value type and codec of the cache that
// wrote the entry, so that a cache of another type or codec sharing the
// key treats the entry as unreadable instead of decoding it into the wrong
// type. Entries written before it existed (v0.1) have none and are read
// as before.
package envelope

import (
	"encoding/binary"
	"errors"
	"iter"
	"math"
	"time"
)

const (
	magic   = 0xCA
	version = 1

	// mustUnderstand are the flag bits a reader may not ignore.
	mustUnderstand = 0x0F
	known          = NotFound
)

// Flags describe an entry.
type Flags uint8

// NotFound marks a negative entry: the loader said the key does not exist.
const NotFound Flags = 1 << 0

// Errors returned by Decode. Callers treat both as a miss.
var (
	ErrCorrupt = errors.New("envelope: corrupt")
	ErrVersion = errors.New("envelope: unknown version or flags")
)

// Header is the metadata stored beside a value.
type Header struct {
	Flags    Flags
	Expiry   time.Time     // logical expiry; zero means none
	LoadTime time.Duration // how long the load took, microsecond precision
	Type     uint32        // fingerprint of the writer's value type and codec; 0 = none (v0.1)
	Stored   time.Time     // when the entry was made (the load's end), ms precision; zero = unknown (before v0.3)
	// Clock is the prefix's invalidation clock (internal/tagclock) as
	// known before the load began: a Clear made after it has a larger
	// clock, so the entry is older than that Clear. 0 = none.
	Clock uint64
	// Tags are the value's tags (cacheaside.Tag), encoded: each a
	// uvarint length and its bytes. Decode checks the encoding and
	// returns them aliasing its input; read them with TagsOf. Build them
	// with AppendTag. nil = none.
	Tags []byte
}

// AppendTag appends tag to the encoded tags dst.
func AppendTag(dst []byte, tag string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(tag)))
	return append(dst, tag...)
}

// TagsOf yields the tags of an encoded list (Header.Tags), as slices of
// it. Decode has checked the encoding of a decoded header's; TagsOf stops
// at the first malformed entry of any other.
func TagsOf(tags []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for tag, rest, ok := NextTag(tags); ok; tag, rest, ok = NextTag(rest) {
			if !yield(tag) {
				return
			}
		}
	}
}

// NextTag splits the first tag off an encoded list: TagsOf without a
// closure, for the hit path. ok is false at the end or at a malformed
// entry.
func NextTag(tags []byte) (tag, rest []byte, ok bool) {
	n, w := binary.Uvarint(tags)
	if w <= 0 || n > uint64(len(tags)-w) {
		return nil, nil, false
	}
	return tags[w : w+int(n)], tags[w+int(n):], true
}

// validTags reports whether tags is a well-formed encoded list.
func validTags(tags []byte) bool {
	for len(tags) > 0 {
		n, w := binary.Uvarint(tags)
		if w <= 0 || n > uint64(len(tags)-w) {
			return false
		}
		tags = tags[w+int(n):]
	}
	return true
}

// MaxHeader is an upper bound on the bytes Append adds before the payload,
// besides the tags (at most MaxVarintLen64 + len(Header.Tags) more).
const MaxHeader = 3 + binary.MaxVarintLen64 + binary.MaxVarintLen64 + binary.MaxVarintLen64 + binary.MaxVarintLen32 + binary.MaxVarintLen64 + binary.MaxVarintLen64

// Append appends the envelope of h and payload to dst and returns it.
func Append(dst []byte, h Header, payload []byte) []byte {
	var fields [4*binary.MaxVarintLen64 + binary.MaxVarintLen32]byte
	n := 0
	var exp int64
	if !h.Expiry.IsZero() {
		exp = h.Expiry.UnixMilli()
	}
	n += binary.PutVarint(fields[n:], exp)
	n += binary.PutUvarint(fields[n:], uint64(max(h.LoadTime, 0)/time.Microsecond)) // at most MaxInt64/1000
	// Fields are positional: a later field present means every earlier
	// one is written, as zero when absent.
	tagged := len(h.Tags) > 0
	if h.Type != 0 || !h.Stored.IsZero() || h.Clock != 0 || tagged {
		n += binary.PutUvarint(fields[n:], uint64(h.Type))
	}
	if !h.Stored.IsZero() || h.Clock != 0 || tagged {
		var ms int64
		if !h.Stored.IsZero() {
			ms = h.Stored.UnixMilli()
		}
		n += binary.PutVarint(fields[n:], ms)
	}
	if h.Clock != 0 || tagged {
		n += binary.PutUvarint(fields[n:], h.Clock)
	}
	total := n
	if tagged {
		total += uvarintLen(uint64(len(h.Tags))) + len(h.Tags)
	}
	dst = append(dst, magic, version, byte(h.Flags))
	dst = binary.AppendUvarint(dst, uint64(total))
	dst = append(dst, fields[:n]...)
	if tagged {
		dst = binary.AppendUvarint(dst, uint64(len(h.Tags)))
		dst = append(dst, h.Tags...)
	}
	return append(dst, payload...)
}

// VersionOf returns the version byte of b, and false when b does not start
// like an envelope (no magic byte). It does not check the rest: see Decode.
func VersionOf(b []byte) (int, bool) {
	if len(b) < 2 || b[0] != magic {
		return 0, false
	}
	return int(b[1]), true
}

// Decode parses b and returns its header and the payload, which aliases b.
// It never panics: bytes that are not an envelope give ErrCorrupt, an
// envelope of another version or with a flag this reader must understand
// but does not gives ErrVersion.
func Decode(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < 4 || b[0] != magic {
		return h, nil, ErrCorrupt
	}
	if b[1] != version {
		return h, nil, ErrVersion
	}
	h.Flags = Flags(b[2])
	if h.Flags&mustUnderstand&^known != 0 {
		return h, nil, ErrVersion
	}
	n, w := binary.Uvarint(b[3:])
	if w <= 0 || n > uint64(len(b)-3-w) {
		return h, nil, ErrCorrupt
	}
	fields := b[3+w : 3+w+int(n)]
	payload := b[3+w+int(n):]

	exp, w := binary.Varint(fields)
	if w < 0 || (w == 0 && len(fields) > 0) {
		return h, nil, ErrCorrupt
	}
	if w > 0 {
		fields = fields[w:]
		if exp != 0 {
			h.Expiry = time.UnixMilli(exp)
		}
		us, w := binary.Uvarint(fields)
		if w < 0 || (w == 0 && len(fields) > 0) {
			return h, nil, ErrCorrupt
		}
		if us > uint64(math.MaxInt64)/uint64(time.Microsecond) {
			return h, nil, ErrCorrupt
		}
		h.LoadTime = time.Duration(us) * time.Microsecond
		if w > 0 {
			fields = fields[w:]
			typ, w := binary.Uvarint(fields)
			if w < 0 || (w == 0 && len(fields) > 0) || typ > math.MaxUint32 {
				return h, nil, ErrCorrupt
			}
			h.Type = uint32(typ)
			if w > 0 {
				fields = fields[w:]
				ms, w := binary.Varint(fields)
				if w < 0 || (w == 0 && len(fields) > 0) {
					return h, nil, ErrCorrupt
				}
				if ms != 0 {
					h.Stored = time.UnixMilli(ms)
				}
				if w > 0 {
					fields = fields[w:]
					clock, w := binary.Uvarint(fields)
					if w < 0 || (w == 0 && len(fields) > 0) {
						return h, nil, ErrCorrupt
					}
					h.Clock = clock
					if w > 0 {
						fields = fields[w:]
						m, w := binary.Uvarint(fields)
						if w < 0 || (w == 0 && len(fields) > 0) || (w > 0 && m > uint64(len(fields)-w)) {
							return h, nil, ErrCorrupt
						}
						if w > 0 && m > 0 {
							h.Tags = fields[w : w+int(m)]
							if !validTags(h.Tags) {
								return h, nil, ErrCorrupt
							}
						}
					}
				}
			}
		}
	}
	if h.Flags&NotFound != 0 && len(payload) != 0 {
		return h, nil, ErrCorrupt
	}
	return h, payload, nil
}

// uvarintLen is the length of the uvarint encoding of x.
func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}
