package cacheaside_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// BenchmarkInvalidateReplicaAcks measures what WithReplicaAcks costs an
// Invalidate on a primary with one replica: one key per call, acks=0
// (the baseline: the primary's answer) beside acks=1 (the primary's answer
// and the replica's acknowledgement), both in the same run.
func BenchmarkInvalidateReplicaAcks(b *testing.B) {
	p := redistest.Start(b)
	r := redistest.Start(b, "--replicaof", "127.0.0.1", strconv.Itoa(p.Port()))
	redistest.WaitReplicated(b, p, r)
	rdb := p.Client(b)
	load := newRowVersion("v").load
	for _, acks := range []int{0, 1} {
		b.Run("acks="+strconv.Itoa(acks), func(b *testing.B) {
			c, err := cacheaside.New(rdb, load, cacheaside.WithRedisTimeout(time.Second), cacheaside.WithReplicaAcks(acks, time.Second))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := b.Context()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if err := c.Invalidate(ctx, strconv.Itoa(i%1000)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
