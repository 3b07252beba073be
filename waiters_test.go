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

// TestWaitersSeesJoinedGets: waiter contexts are recorded by default
// (v0.2; v0.1 needed WithWaiterContexts(true)).
func TestWaitersSeesJoinedGets(t *testing.T) {
	if got := waitersOf(t); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Waiters in the loader = %q, want the three Gets that joined, not the leader", got)
	}
}

func TestWaitersOffWithDeprecatedOptOut(t *testing.T) {
	if got := waitersOf(t, cacheaside.WithWaiterContexts(false)); len(got) != 0 {
		t.Errorf("Waiters with WithWaiterContexts(false) = %q, want none", got)
	}
}

// TestWaitersInBatchLoad: a Get that joins the flight of one key of a
// GetMany is among the waiters its batch loader sees.
func TestWaitersInBatchLoad(t *testing.T) {
	srv := redistest.Start(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var seen []string
	batch := func(ctx context.Context, keys []string) (map[string]string, error) {
		close(entered)
		<-release
		for _, w := range cacheaside.Waiters(ctx) {
			name, _ := w.Value(callerName{}).(string)
			seen = append(seen, name)
		}
		out := map[string]string{}
		for _, k := range keys {
			out[k] = "v-" + k
		}
		return out, nil
	}
	c := newCache(t, srv, func(ctx context.Context, k string) (string, error) { return "v-" + k, nil },
		cacheaside.WithBatchLoader(batch), cacheaside.WithWaiterContexts(true))
	ctx := testContext(t)
	many := make(chan error, 1)
	go func() {
		_, err := c.GetMany(ctx, []string{"a", "b"})
		many <- err
	}()
	<-entered
	single := getAsync(context.WithValue(ctx, callerName{}, "joiner"), c, "b")
	time.Sleep(50 * time.Millisecond) // let it join b's flight
	close(release)
	if err := <-many; err != nil {
		t.Fatalf("GetMany = %v", err)
	}
	if res := await(t, single, "the joining Get"); res.err != nil || res.val != "v-b" {
		t.Fatalf("Get(b) = %q, %v", res.val, res.err)
	}
	if !slices.Equal(seen, []string{"joiner"}) {
		t.Errorf("Waiters in the batch loader = %q, want the Get that joined b's flight", seen)
	}
}
