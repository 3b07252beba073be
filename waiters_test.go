package cacheaside_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

type callerName struct{}

// waitersOf runs a Get of "k" whose load stalls, joins it with three more
// Gets, and returns the names the loader saw through Waiters when it was
// released.
func waitersOf(t *testing.T, opts ...cacheaside.Option) []string {
	t.Helper()
	srv := redistest.Start(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var seen []string
	c := newCache(t, srv, func(ctx context.Context, k string) (string, error) {
		once.Do(func() { close(entered) })
		<-release
		for _, w := range cacheaside.Waiters(ctx) {
			name, _ := w.Value(callerName{}).(string)
			seen = append(seen, name)
		}
		return "v", nil
	}, opts...)
	var wg sync.WaitGroup
	get := func(name string) {
		ctx := context.WithValue(testContext(t), callerName{}, name)
		wg.Go(func() {
			if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
				t.Errorf("Get from %s = %q, %v", name, v, err)
			}
		})
	}
	get("leader")
	<-entered
	for _, n := range []string{"a", "b", "c"} {
		get(n)
	}
	time.Sleep(50 * time.Millisecond) // let them join
	close(release)
	wg.Wait()
	slices.Sort(seen)
	return seen
}

func TestWaitersSeesJoinedGets(t *testing.T) {
	if got := waitersOf(t, cacheaside.WithWaiterContexts(true)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Waiters in the loader = %q, want the three Gets that joined, not the leader", got)
	}
}

func TestWaitersOffByDefault(t *testing.T) {
	if got := waitersOf(t); len(got) != 0 {
		t.Errorf("Waiters without WithWaiterContexts = %q, want none", got)
	}
}
