// Package counter is a striped event counter for the hit path: many
// goroutines add to it at once, few read it.
//
// One atomic.Uint64 added to by every Get is a cache line that every core
// takes in turn: on the L1 hit path, a few tens of nanoseconds of the
// otter Get's hundred, and false sharing for the counters beside it. A
// Counter spreads the adds over stripes, each on a cache line of its
// own, picked from the address of the adding goroutine's stack (each
// goroutine's stack is a block of its own; no lock, no shared state, and
// no random generator, which costs as much as the add it would spread),
// so that concurrent adds from different goroutines seldom meet; Load
// sums the stripes.
package counter

import (
	"sync/atomic"
	"unsafe"
)

// stripes is the number of stripes of a Counter, a power of two: two
// goroutines adding at once meet on a stripe about 1 time in 16.
const stripes = 16

// cacheLine is the padding of a stripe: 128 bytes, since modern x86
// cores prefetch cache lines in pairs.
const cacheLine = 128

// Counter counts events. The zero value is ready to use; a Counter must
// not be copied after first use.
type Counter struct {
	s [stripes]struct {
		n atomic.Uint64
		_ [cacheLine - 8]byte
	}
}

// Add adds n.
func (c *Counter) Add(n uint64) {
	var here byte
	c.s[stripe(uintptr(unsafe.Pointer(&here)))].n.Add(n)
}

// stripe maps an address on a goroutine's stack to a stripe. Stacks are
// at least 2 KiB, so the bits from the 11th up tell goroutines apart;
// a goroutine keeps its stripe while its stack stays where it is.
func stripe(sp uintptr) int { return int((sp>>11 ^ sp>>15 ^ sp>>19) & (stripes - 1)) }

// Load returns the sum of every Add that happened before it, and of some of
// those concurrent with it.
func (c *Counter) Load() uint64 {
	var sum uint64
	for i := range c.s {
		sum += c.s[i].n.Load()
	}
	return sum
}
