package redisguard

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestPatiently: a try that failed slow (ErrSlow, cut at the budget while
// the node answered) is tried again until it succeeds or the limit passes
// since the first try; a try judged silent, skipped or past the limit, or
// any try on the timeout clone, is not; nor is one after ctx ended.
func TestPatiently(t *testing.T) {
	slow := fmt.Errorf("%w: %w", ErrSlow, context.DeadlineExceeded)
	const limit = 300 * time.Millisecond
	for _, tc := range []struct {
		name      string
		clone     bool
		errs      []error // the tries' errors in turn; the last repeats
		cancelled bool
		wantTries int // exact, or at least when atLeast
		atLeast   bool
		wantErr   error
	}{
		{name: "slow then done", errs: []error{slow, slow, nil}, wantTries: 3},
		{name: "silent", errs: []error{errBudget}, wantTries: 1, wantErr: ErrIncomplete},
		{name: "skipped", errs: []error{ErrSkipped}, wantTries: 1, wantErr: ErrSkipped},
		{name: "past the limit", errs: []error{errOverdue}, wantTries: 1, wantErr: ErrSlow},
		{name: "outage", errs: []error{errRefused}, wantTries: 1, wantErr: errRefused},
		{name: "clone", clone: true, errs: []error{slow}, wantTries: 1, wantErr: ErrSlow},
		{name: "caller gone", cancelled: true, errs: []error{slow}, wantTries: 1, wantErr: ErrSlow},
		{name: "slow to the limit", errs: []error{slow}, wantTries: 3, atLeast: true, wantErr: ErrSlow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Guard{budget: 100 * time.Millisecond, limit: limit, clone: tc.clone}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			tries := 0
			start := time.Now()
			err := g.patiently(ctx, func() error {
				err := tc.errs[min(tries, len(tc.errs)-1)]
				tries++
				return err
			})
			took := time.Since(start)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("patiently() = %v, want %v", err, tc.wantErr)
			}
			if tries != tc.wantTries && !(tc.atLeast && tries >= tc.wantTries) {
				t.Errorf("patiently() made %d tries, want %d (at least: %v)", tries, tc.wantTries, tc.atLeast)
			}
			// Never much past the limit: one pause at most beyond it,
			// with a margin for a loaded machine.
			if took > limit+slowRetryMax+time.Second {
				t.Errorf("patiently() took %v, want at most about the limit %v", took, limit)
			}
		})
	}
}
