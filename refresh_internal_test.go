package cacheaside

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestXFetchProbability checks the trigger rule of early refresh against
// its closed form: with a gap g left before expiry, a load time Δ and β,
// P(refresh) = P(−Δβ·ln u ≥ g) = exp(−g/(Δβ)). 200,000 draws from a
// fixed seed; the tolerance of 0.01 is over 8 standard deviations (at most
// 0.0011 for a Bernoulli of 200,000 draws).
func TestXFetchProbability(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1_700_000_000, 0)
	for _, tt := range []struct {
		gap, delta time.Duration
		beta       float64
	}{
		{100 * time.Millisecond, 100 * time.Millisecond, 1},
		{50 * time.Millisecond, 100 * time.Millisecond, 1},
		{300 * time.Millisecond, 100 * time.Millisecond, 1},
		{300 * time.Millisecond, 100 * time.Millisecond, 3},
		{time.Second, 10 * time.Millisecond, 1}, // far from expiry: almost never
	} {
		const n = 200_000
		hits := 0
		for range n {
			if xfetch(now, now.Add(tt.gap), tt.delta, tt.beta, 1-rng.Float64()) {
				hits++
			}
		}
		got := float64(hits) / n
		want := math.Exp(-float64(tt.gap) / (float64(tt.delta) * tt.beta))
		if math.Abs(got-want) > 0.01 {
			t.Errorf("xfetch(gap %v, Δ %v, β %v) fired %.4f of the time, want %.4f ± 0.01", tt.gap, tt.delta, tt.beta, got, want)
		}
	}
	// At or past the expiry it always fires.
	if !xfetch(now, now, time.Millisecond, 1, 1) || !xfetch(now, now.Add(-time.Second), time.Millisecond, 1, 0.5) {
		t.Error("xfetch at or after the expiry = false, want true")
	}
}

// TestXFetchHugeBeta: a β so large that Δ·β·ln u overflows a Duration
// must refresh (the gap is larger than any time left), never wrap around
// to "never refresh".
func TestXFetchHugeBeta(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, beta := range []float64{1e12, 1e300, math.MaxFloat64} {
		if !xfetch(now, now.Add(time.Hour), time.Millisecond, beta, 0.5) {
			t.Errorf("xfetch(1h before expiry, Δ 1ms, β %g, u 0.5) = false, want true", beta)
		}
	}
	// u = 1 gives a gap of 0 for any β: only the expiry itself triggers.
	if xfetch(now, now.Add(time.Hour), time.Millisecond, 1e300, 1) {
		t.Error("xfetch(1h before expiry, β 1e300, u 1) = true, want false")
	}
}
