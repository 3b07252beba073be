// Package protocol is what the processes of a fleet agree on in Redis:
// the key layout, the Lua scripts of the fill lock and the conditional
// fill, their arguments and the meaning of their replies. It is written
// once here and used by every path of the cache (Get, GetMany, stale
// reloads, early refresh, warm-up, Set and Invalidate).
package protocol

import (
	"crypto/sha256"
	"encoding/hex"
)

// Redis key layout. For a key whose encoded form is s the cache uses
//
//	<prefix>{s}        the value, in the envelope format
//	<prefix>{s}:lock   the fill lock (a random token, with PX = lock TTL)
//	<prefix>{s}:gen    the generation, rewritten by Invalidate and Set
//
// The braces make s a Redis Cluster hash tag, so the three keys share one
// slot and every script touches one slot only. When s is empty or contains
// '}', which would end the tag early, or starts with '#', which would make
// it look like such a tag, the tag is "#" followed by the hex SHA-256 of s
// instead.
const (
	LockSuffix = ":lock"
	GenSuffix  = ":gen"
)

// ValueKey returns the Redis key of the value for encoded key s.
func ValueKey(prefix, s string) string {
	if !Plain(s) {
		sum := sha256.Sum256([]byte(s))
		return prefix + "{#" + hex.EncodeToString(sum[:]) + "}"
	}
	return prefix + "{" + s + "}"
}

// Plain reports whether encoded key s is its own hash tag in the value
// key: not empty, not starting with '#' and without '}' (else ValueKey
// hashes it).
func Plain[S string | []byte](s S) bool {
	if len(s) == 0 || s[0] == '#' {
		return false
	}
	for i := range len(s) {
		if s[i] == '}' {
			return false
		}
	}
	return true
}

// Keys holds the three Redis keys of one cache key (value, lock,
// generation), in the order the Lua scripts take them.
type Keys []string

// KeysFor returns the keys of the value key vkey.
func KeysFor(vkey string) Keys {
	return Keys{vkey, vkey + LockSuffix, vkey + GenSuffix}
}
