package l1

import (
	"encoding/binary"
	"strings"
)

// An invalidation message names the value keys one process invalidated,
// so that every other process drops them from its L1. Keys and prefixes
// may hold any byte, so a message is length-prefixed:
//
//	format                         "\x00inv1"
//	uvarint len(origin), origin    the sender's token prefix
//	uvarint len(key), key          once per value key
//
// Earlier versions sent "<origin>\n<key>\n…", which cannot carry a
// newline and never starts with a NUL. A message in that format, or in
// none, may name any key: a receiver must then distrust its whole L1
// (Cache.VerifyFromNow), as after a dropped subscription.
const format = "\x00inv1"

// Encode returns the message that names keys, sent by origin.
func Encode(origin string, keys []string) []byte {
	n := len(format) + binary.MaxVarintLen64 + len(origin)
	for _, k := range keys {
		n += binary.MaxVarintLen64 + len(k)
	}
	b := append(make([]byte, 0, n), format...)
	b = binary.AppendUvarint(b, uint64(len(origin)))
	b = append(b, origin...)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

// Decode reads a message of Encode. ok is false when msg is in another
// format or cut short; the keys are substrings of msg.
func Decode(msg string) (origin string, keys []string, ok bool) {
	rest, ok := strings.CutPrefix(msg, format)
	if !ok {
		return "", nil, false
	}
	if origin, rest, ok = cutField(rest); !ok {
		return "", nil, false
	}
	origin, _ = splitOrigin(origin) // without a request for confirmation (confirm.go)
	for rest != "" {
		var k string
		if k, rest, ok = cutField(rest); !ok {
			return "", nil, false
		}
		keys = append(keys, k)
	}
	return origin, keys, true
}

// cutField splits a uvarint-length-prefixed field off the front of s.
func cutField(s string) (field, rest string, ok bool) {
	n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
	if w <= 0 || n > uint64(len(s)-w) {
		return "", "", false
	}
	return s[w : w+int(n)], s[w+int(n):], true
}
