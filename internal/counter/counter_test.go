package counter

import (
	"sync"
	"sync/atomic"
	"testing"
)

type atomicUint64 = atomic.Uint64

// TestCounterSumsConcurrentAdds: adds from many goroutines at once all
// show in Load once they have returned.
func TestCounterSumsConcurrentAdds(t *testing.T) {
	var c Counter
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 10_000 {
				c.Add(uint64(g + 1))
			}
		})
	}
	wg.Wait()
	if got, want := c.Load(), uint64(10_000*(1+2+3+4+5+6+7+8)); got != want {
		t.Errorf("Load() = %d, want %d", got, want)
	}
}

// TestCounterAddAllocatesNothing: Add is on the hit path.
func TestCounterAddAllocatesNothing(t *testing.T) {
	var c Counter
	if n := testing.AllocsPerRun(100, func() { c.Add(1) }); n != 0 {
		t.Errorf("Add allocates %v times, want 0", n)
	}
}

// BenchmarkCounterAdd compares a Counter with one atomic.Uint64 under
// concurrent adds (go test -bench Counter -cpu 2,8).
func BenchmarkCounterAdd(b *testing.B) {
	b.Run("impl=striped", func(b *testing.B) {
		var c Counter
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Add(1)
			}
		})
	})
	b.Run("impl=atomic", func(b *testing.B) {
		var c struct{ n atomicUint64 }
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.n.Add(1)
			}
		})
	})
}
