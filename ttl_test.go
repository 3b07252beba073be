package cacheaside

import (
	"math"
	"testing"
	"time"
)

// jitterBounds returns the range jittered(d, f) must stay in: d·(1−f) and
// d·(1+f), truncated to whole milliseconds and never below 1ms. The bounds
// are widened by a relative 1e-12 so that float rounding in jittered (which
// computes d·(1 − f + 2f·u)) is not mistaken for a bug.
func jitterBounds(d time.Duration, f float64) (lo, hi time.Duration) {
	toDuration := func(x float64) time.Duration {
		if x >= math.MaxInt64 {
			return math.MaxInt64
		}
		return time.Duration(x)
	}
	lo = toDuration(float64(d) * (1 - f) * (1 - 1e-12)).Truncate(time.Millisecond)
	hi = toDuration(float64(d) * (1 + f) * (1 + 1e-12)).Truncate(time.Millisecond)
	return max(lo, time.Millisecond), max(hi, time.Millisecond)
}

func TestJitteredBounds(t *testing.T) {
	const samples = 10_000
	for _, d := range []time.Duration{
		time.Nanosecond,
		999 * time.Microsecond,
		time.Millisecond,
		1500 * time.Microsecond,
		2 * time.Millisecond,
		10 * time.Millisecond,
		time.Second + 123456*time.Nanosecond,
		30 * time.Second,
		10 * time.Minute,
		24 * time.Hour,
		100 * 365 * 24 * time.Hour,
	} {
		for _, f := range []float64{0.01, 0.1, 0.25, 0.5, 0.9, 0.999} {
			lo, hi := jitterBounds(d, f)
			for range samples {
				got := jittered(d, f)
				if got < lo || got > hi {
					t.Fatalf("jittered(%v, %v) = %v, want in [%v, %v]", d, f, got, lo, hi)
				}
				if got%time.Millisecond != 0 {
					t.Fatalf("jittered(%v, %v) = %v, want a whole number of milliseconds", d, f, got)
				}
				if got < time.Millisecond {
					t.Fatalf("jittered(%v, %v) = %v, want ≥ 1ms", d, f, got)
				}
			}
		}
	}
}

func TestJitteredZeroFraction(t *testing.T) {
	tests := []struct {
		d, want time.Duration
	}{
		{time.Nanosecond, time.Millisecond},
		{999 * time.Microsecond, time.Millisecond},
		{time.Millisecond, time.Millisecond},
		{1999 * time.Microsecond, time.Millisecond},
		{2 * time.Millisecond, 2 * time.Millisecond},
		{time.Second + 999999*time.Nanosecond, time.Second},
		{10*time.Minute + 123456789*time.Nanosecond, 10*time.Minute + 123*time.Millisecond},
		{1500 * time.Millisecond, 1500 * time.Millisecond}, // never rounded to seconds
		{math.MaxInt64, time.Duration(math.MaxInt64).Truncate(time.Millisecond)},
	}
	for _, tt := range tests {
		for range 100 {
			if got := jittered(tt.d, 0); got != tt.want {
				t.Fatalf("jittered(%v, 0) = %v, want %v", tt.d, got, tt.want)
			}
		}
	}
}

// The samples must really spread over the whole range, not just stay in it.
//
// For n = 10,000 independent uniform samples, the chance that none lands in
// the lowest 5% of the range is 0.95^n = e^(n·ln 0.95) ≈ 5e-223, and the
// same for the highest 5%: with two ends and a dozen cases the test fails by
// chance with probability below 1e-220, which is nothing.
//
// Truncation to whole milliseconds only lowers a sample, by less than 1ms,
// so the minimum is checked as is and the maximum with 1ms of slack. Every
// case has a range wide enough (5% of it ≥ 5ms) for that slack not to
// matter.
func TestJitteredSpread(t *testing.T) {
	const samples = 10_000
	tests := []struct {
		d time.Duration
		f float64
	}{
		{time.Second, 0.05},
		{time.Second, 0.5},
		{30 * time.Second, 0.05},
		{30 * time.Second, 0.1},
		{10 * time.Minute, 0.1},
		{10 * time.Minute, 0.9},
		{time.Hour, 0.01},
		{24 * time.Hour, 0.25},
	}
	for _, tt := range tests {
		a := float64(tt.d) * (1 - tt.f)
		b := float64(tt.d) * (1 + tt.f)
		tail := 0.05 * (b - a)
		lowest, highest := time.Duration(math.MaxInt64), time.Duration(0)
		for range samples {
			got := jittered(tt.d, tt.f)
			lowest, highest = min(lowest, got), max(highest, got)
		}
		if float64(lowest) > a+tail {
			t.Errorf("min of %d jittered(%v, %v) = %v, want ≤ %v (lowest 5%% of the range)",
				samples, tt.d, tt.f, lowest, time.Duration(a+tail))
		}
		if float64(highest) < b-tail-float64(time.Millisecond) {
			t.Errorf("max of %d jittered(%v, %v) = %v, want ≥ %v (highest 5%% of the range)",
				samples, tt.d, tt.f, highest, time.Duration(b-tail)-time.Millisecond)
		}
	}
}

// WithTTL accepts any duration of at least 1ms, so jittered must not
// overflow for the largest ones: d·(1+f) above math.MaxInt64 nanoseconds
// must not wrap to a negative duration that is then clamped to 1ms. The
// lower bound d·(1−f) still holds for every sample.
func TestJitteredHugeTTL(t *testing.T) {
	for _, tt := range []struct {
		d time.Duration
		f float64
	}{
		{math.MaxInt64, 0.1},
		{math.MaxInt64 / 10 * 9, 0.5},
	} {
		lo, _ := jitterBounds(tt.d, tt.f)
		for range 1000 {
			if got := jittered(tt.d, tt.f); got < lo {
				t.Fatalf("jittered(%v, %v) = %v, want ≥ %v (d·(1−f)); d·(1+f) overflows int64 nanoseconds", tt.d, tt.f, got, lo)
			}
		}
	}
}

// backoffBase is the un-jittered pause of a round: pollMin grown by half
// each round, capped at pollMax.
func backoffBase(round int) time.Duration {
	d := float64(pollMin)
	for i := 0; i < round; i++ {
		d *= 1.5
	}
	return time.Duration(min(d, float64(pollMax)))
}

func TestBackoffBounds(t *testing.T) {
	const samples = 2000
	lo := time.Duration(0.8 * float64(pollMin))
	hi := time.Duration(1.2 * float64(pollMax))
	for _, round := range []int{-1, 0, 1, 2, 3, 4, 5, 10, 100, 1 << 20, math.MaxInt} {
		base := backoffBase(min(round, 100))
		for range samples {
			got := backoff(round)
			if got < lo || got > hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", round, got, lo, hi)
			}
			// ±20% around the round's own base, with 1ns for float rounding.
			if rlo, rhi := time.Duration(0.8*float64(base))-1, time.Duration(1.2*float64(base))+1; got < rlo || got > rhi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v] (base %v ± 20%%)", round, got, rlo, rhi, base)
			}
		}
	}
}

// The mean pause grows from round to round until it reaches pollMax. Each
// sample is base·U(0.8, 1.2), whose standard deviation is about 0.115·base,
// so the mean of 2,000 samples is within 0.3% of base with overwhelming
// probability (the steps between rounds are at least 48%).
func TestBackoffGrows(t *testing.T) {
	const samples = 2000
	mean := func(round int) time.Duration {
		var sum time.Duration
		for range samples {
			sum += backoff(round)
		}
		return sum / samples
	}
	prev := mean(0)
	if lo, hi := time.Duration(0.95*float64(pollMin)), time.Duration(1.05*float64(pollMin)); prev < lo || prev > hi {
		t.Errorf("mean backoff(0) = %v, want about pollMin = %v", prev, pollMin)
	}
	capped := false
	for round := 1; round <= 8; round++ {
		m := mean(round)
		if backoffBase(round-1) < pollMax && m <= prev {
			t.Errorf("mean backoff(%d) = %v, want > mean backoff(%d) = %v", round, m, round-1, prev)
		}
		if backoffBase(round) == pollMax {
			capped = true
			if lo, hi := time.Duration(0.95*float64(pollMax)), time.Duration(1.05*float64(pollMax)); m < lo || m > hi {
				t.Errorf("mean backoff(%d) = %v, want about pollMax = %v", round, m, pollMax)
			}
		}
		prev = m
	}
	if !capped {
		t.Errorf("backoff never reached pollMax = %v within 8 rounds", pollMax)
	}
}
