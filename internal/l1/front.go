package l1

import (
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"unsafe"
)

// Front is an index of an L1's entries by the caller's key, in front of
// the lookup by Redis key: a read-first Get of a key whose entry it holds
// builds no Redis key, hashes no string, and leaves no mark in otter's
// read buffers, which is most of what an L1 hit cost beside a bare otter
// Get (BenchmarkHitInstructions). It is a direct-mapped table: each slot
// holds the entry most recently found by Load among the keys that hash to
// it, so a hot key stays in its slot while the cold keys that share it are
// read less often than it.
//
// A slot is checked, not kept in step: Invalidate and InvalidateAll do
// not know the caller's keys, so they never touch the Front. Get instead
// applies to the entry the same test Put applies to a write (no
// invalidation of the entry's stripe or of the whole cache since its read
// began), besides the healthy read's (expiry, trusted, leased), and
// serves only an entry otter still holds (entry.gone): one it evicted or
// replaced may be older than what a later read put for the key (a
// GetMany, a prefill round), which the lookup by Redis key would return. An
// invalidation advances its stripe before it returns, so a Get that
// starts after it never finds the older entry here, whether otter still
// holds it, has evicted it or has replaced it; the type comment of Cache
// states the rule. The price of the stripe is that an invalidation of any
// of its keys (1 in 1024) also sends the others' entries read before it
// back to the lookup by Redis key until they are read again from Redis.
type Front[K comparable, V any] struct {
	l       *Cache[V]
	seed    maphash.Seed
	intSeed uint64
	isInt   bool
	mask    uint64
	slots   []atomic.Pointer[frontRef[K, V]]
}

// frontRef is a slot's content: an entry and the caller's key it was
// found under. An entry keeps the frontRef made for it (entry.front), so
// a key moving back into its slot allocates nothing.
type frontRef[K comparable, V any] struct {
	key K
	e   *entry[V]
}

// maxFrontSlots bounds a Front's table: 512 KiB of slots.
const maxFrontSlots = 1 << 16

// NewFront returns a Front of l with one slot per entry l holds (rounded
// up to a power of two, at most maxFrontSlots): 8 bytes a slot, and 32
// more for the first Load of each entry. It returns nil for a K that
// Indexable rejects.
func NewFront[K comparable, V any](l *Cache[V], size int) *Front[K, V] {
	if !Indexable(reflect.TypeFor[K]()) {
		return nil
	}
	n := 1 << bits.Len(uint(max(size, 2)-1))
	n = min(n, maxFrontSlots)
	var isInt bool
	switch reflect.TypeFor[K]().Kind() {
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		isInt = true
	}
	return &Front[K, V]{
		l: l, seed: maphash.MakeSeed(), intSeed: rand.Uint64(), isInt: isInt,
		mask: uint64(n - 1), slots: make([]atomic.Pointer[frontRef[K, V]], n),
	}
}

// Get returns, for a healthy read, the entry of key if its slot holds it
// and l.Get(vkey, true) would return it: not expired, read under the
// current subscription and lease, and not invalidated since its read
// began. See Cache.Get for v.
func (f *Front[K, V]) Get(key K) (v *V, notFound, ok bool) {
	r := f.slots[f.hash(key)&f.mask].Load()
	if r == nil || r.key != key {
		return nil, false, false
	}
	e, l := r.e, f.l
	if e.gone.Load() || e.epoch < e.dropped.Load() || e.epoch < l.cleared.Load() || !l.trusted(e) {
		return nil, false, false
	}
	if now := l.now(); now >= e.expires || now >= l.leased.Load() {
		return nil, false, false
	}
	return &e.val, e.notFound, true
}

// Load is l.Get(vkey, true) for key, whose Redis key is vkey: a read that
// Get did not answer. An entry it finds takes key's slot.
func (f *Front[K, V]) Load(key K, vkey string) (v *V, notFound, ok bool) {
	e, ok := f.l.get(vkey, true)
	if !ok {
		return nil, false, false
	}
	r, _ := e.front.Load().(*frontRef[K, V])
	if r == nil || r.key != key {
		r = &frontRef[K, V]{key: key, e: e}
		e.front.Store(r)
	}
	f.slots[f.hash(key)&f.mask].Store(r)
	return &e.val, e.notFound, true
}

// Indexable reports whether a Front can index keys of type t: whether
// == on t is total and exact, so that two keys it finds equal are the
// same key to WithKeyFunc too. Booleans, integers and strings are, and
// arrays and structs of them. Floats are not (-0 == +0, which a key
// function may encode apart; NaN equals nothing), nor interfaces (a
// dynamic value of a slice type panics when hashed or compared), nor
// pointers and channels (equal as identities while what a key function
// reads through them may change).
func Indexable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	case reflect.Array:
		return Indexable(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !Indexable(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}

// hash returns the hash of key: integer keys (of 4 or 8 bytes, named
// types included) by two rounds of multiply-xorshift of their bits, as
// otter hashes them (cheaper than maphash's generic path), others with
// maphash.
func (f *Front[K, V]) hash(key K) uint64 {
	if f.isInt {
		var u uint64
		if unsafe.Sizeof(key) == 8 {
			u = *(*uint64)(unsafe.Pointer(&key))
		} else {
			u = uint64(*(*uint32)(unsafe.Pointer(&key)))
		}
		hi, lo := bits.Mul64(u^f.intSeed, 0x2d358dccaa6c78a5)
		hi, lo = bits.Mul64(hi^lo, 0x8bb84b93962eacc9)
		return hi ^ lo
	}
	if s, ok := any(key).(string); ok {
		return maphash.String(f.seed, s)
	}
	return maphash.Comparable(f.seed, key)
}
