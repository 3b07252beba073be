// Package decodememo remembers the value a cache decoded from the bytes it
// decoded twice in a row, so that a hot key, whose every Redis read returns
// the same bytes, is decoded once rather than once per read.
//
// A decode is a pure function of its bytes (the Codec contract), so a
// value decoded from equal bytes is the value the codec would return
// again. The memo hands a value out only for the key it was read under:
// values are shared between the callers of one key anyway (a flight's
// callers, the L1's hits), never between keys, whose callers may each
// append to a slice they were given.
//
// Reads of distinct keys cost one hash of the bytes and no allocation: the
// memo keeps a copy of the bytes only when the bytes it is asked about are
// those of the decode before, which reads of many keys in turn rarely are.
package decodememo

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"
)

// Memo holds at most one decoded value. Make it with New; it is safe for
// concurrent use.
type Memo[V any] struct {
	seed  maphash.Seed
	last  atomic.Uint64 // the hash of the bytes decoded last
	entry atomic.Pointer[entry[V]]
}

type entry[V any] struct {
	key   string
	hash  uint64
	bytes []byte // a copy, never the caller's
	val   V
}

// New returns an empty Memo.
func New[V any]() *Memo[V] {
	return &Memo[V]{seed: maphash.MakeSeed()}
}

// Lookup returns the value decoded from b, read under key, if the memo
// holds it. Else it returns b's hash, which the caller passes to Decoded
// once it has decoded b.
func (m *Memo[V]) Lookup(key string, b []byte) (v V, hash uint64, ok bool) {
	hash = maphash.Bytes(m.seed, b)
	if e := m.entry.Load(); e != nil && e.hash == hash && e.key == key && bytes.Equal(e.bytes, b) {
		return e.val, hash, true
	}
	return v, hash, false
}

// Decoded records that b, read under key and whose hash Lookup returned,
// decoded to v. The memo keeps v when b is also what was decoded just
// before: bytes read again and again.
func (m *Memo[V]) Decoded(key string, b []byte, hash uint64, v V) {
	if m.last.Swap(hash) == hash {
		m.entry.Store(&entry[V]{key: key, hash: hash, bytes: bytes.Clone(b), val: v})
	}
}
