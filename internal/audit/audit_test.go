package audit

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestAllowRateAndBurst(t *testing.T) {
	a := New(Config[string, int]{Fraction: 1})
	now := time.Now().UnixNano()
	n := 0
	for range 100 {
		if a.allow(now) {
			n++
		}
	}
	if n != Burst {
		t.Errorf("allowed at once = %d, want the burst %d", n, Burst)
	}
	// One more per interval after that, never more.
	for i := 1; i <= 20; i++ {
		at := now + int64(i)*interval
		got := 0
		for range 5 {
			if a.allow(at) {
				got++
			}
		}
		if got != 1 {
			t.Fatalf("allowed at +%v = %d, want 1", time.Duration(int64(i)*interval), got)
		}
	}
}

func TestSampleFraction(t *testing.T) {
	for _, f := range []float64{0.01, 0.1, 0.5, 1} {
		a := New(Config[string, int]{Fraction: f})
		const n = 1_000_000
		got := 0
		for range n {
			if a.Sample() {
				got++
			}
		}
		if share := float64(got) / n; share < f*0.9 || share > f*1.1 {
			t.Errorf("Fraction %v: sampled %v of hits, want within 10%%", f, share)
		}
	}
}

// TestCheck covers check's verdicts, one sample each.
func TestCheck(t *testing.T) {
	old := time.Now().Add(-time.Minute)
	tests := []struct {
		name     string
		sample   Sample[string, int]
		fresh    int
		notFound bool
		err      error
		replaced bool
		reread   error
		same     func(a, b int) bool
		want     Counts
	}{
		{name: "match", sample: Sample[string, int]{Val: 1, Stored: old}, fresh: 1, want: Counts{Checks: 1}},
		{name: "differs", sample: Sample[string, int]{Val: 1, Stored: old}, fresh: 2, want: Counts{Checks: 1, Stale: 1, OldestStale: time.Minute}},
		{name: "both not found", sample: Sample[string, int]{NotFound: true, Stored: old}, notFound: true, want: Counts{Checks: 1}},
		{name: "cached not found", sample: Sample[string, int]{NotFound: true, Stored: old}, fresh: 1, want: Counts{Checks: 1, Stale: 1, OldestStale: time.Minute}},
		{name: "deleted", sample: Sample[string, int]{Val: 1, Stored: old}, notFound: true, want: Counts{Checks: 1, Stale: 1, OldestStale: time.Minute}},
		{name: "age unknown", sample: Sample[string, int]{Val: 1}, fresh: 2, want: Counts{Checks: 1, Stale: 1}},
		{name: "replaced since", sample: Sample[string, int]{Val: 1, Stored: old}, fresh: 2, replaced: true, want: Counts{Checks: 1}},
		{name: "re-read fails", sample: Sample[string, int]{Val: 1, Stored: old}, fresh: 2, reread: errors.New("redis down"), want: Counts{Errors: 1}},
		{name: "no load slot", sample: Sample[string, int]{Val: 1}, err: ErrDropped, want: Counts{Dropped: 1}},
		{name: "load error", sample: Sample[string, int]{Val: 1}, err: errors.New("down"), want: Counts{Errors: 1}},
		{name: "same panics", sample: Sample[string, int]{Val: 1}, fresh: 1, same: func(a, b int) bool { panic("x") }, want: Counts{Errors: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same := tt.same
			if same == nil {
				same = func(a, b int) bool { return a == b }
			}
			a := New(Config[string, int]{
				Fraction: 1,
				Same:     same,
				Load: func(context.Context, string) (int, bool, error) {
					return tt.fresh, tt.notFound, tt.err
				},
				Replaced: func(context.Context, string, time.Time) (bool, error) { return tt.replaced, tt.reread },
			})
			a.check(context.Background(), tt.sample)
			got := a.Counts()
			// The age is the time since the sample's store: a minute and
			// the test's own time.
			if got.OldestStale >= tt.want.OldestStale && got.OldestStale < tt.want.OldestStale+10*time.Second {
				got.OldestStale = tt.want.OldestStale
			}
			if got != tt.want {
				t.Errorf("Counts = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestOfferNeverBlocks: past the queue's size, samples are dropped and
// counted, not waited for.
func TestOfferNeverBlocks(t *testing.T) {
	a := New(Config[string, int]{Fraction: 1})
	for range 100 {
		a.Offer(Sample[string, int]{})
	}
	dropped, queued := a.Counts().Dropped, len(a.queue)
	if dropped+uint64(queued) != 100 || queued < Burst || queued > QueueSize {
		t.Errorf("Dropped = %d, queued %d: want the burst or a few more queued (at most %d), the rest dropped", dropped, queued, QueueSize)
	}
}
