package replay

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRedis applies invalidations by recording them, failing while down.
type fakeRedis struct {
	mu      sync.Mutex
	down    bool
	applied []string
	during  func() // called inside Apply, before it answers, if not nil
}

var errDown = errors.New("redis down")

func (f *fakeRedis) apply(ctx context.Context, keys []string) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.during != nil {
		f.during()
	}
	errs := make([]error, len(keys))
	for i, k := range keys {
		if f.down || ctx.Err() != nil {
			errs[i] = errDown
			continue
		}
		f.applied = append(f.applied, k)
	}
	return errs
}

func (f *fakeRedis) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeRedis) appliedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

func newQueue(f *fakeRedis, max int, dropped *[]string) *Queue {
	return New(Config{Max: max, Batch: 2, Apply: f.apply, Dropped: func(keys []string) {
		*dropped = append(*dropped, keys...)
	}})
}

func pendingKeys(q *Queue) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var keys []string
	for el := q.order.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*entry).key)
	}
	return keys
}

func TestBoundDropsOldest(t *testing.T) {
	var dropped []string
	q := newQueue(&fakeRedis{}, 3, &dropped)
	q.Add("a", "b", "c")
	q.Add("a") // newest now: b is the oldest
	q.Add("d", "e")
	if got, want := pendingKeys(q), []string{"a", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}
	if want := []string{"b", "c"}; !slices.Equal(dropped, want) {
		t.Errorf("Dropped told of %v, want %v", dropped, want)
	}
	if got, want := q.Counts(), (Counts{Queued: 6, Dropped: 2, Pending: 3}); got != want {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
}

func TestReplayAppliesOldestFirstInBatches(t *testing.T) {
	f := &fakeRedis{}
	var dropped []string
	q := newQueue(f, 10, &dropped)
	q.Add("a", "b", "c")
	if err := q.Replay(context.Background()); err != nil {
		t.Fatalf("Replay = %v, want nil", err)
	}
	if got, want := f.appliedKeys(), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v (a batch of 2, oldest first)", got, want)
	}
	if got, want := pendingKeys(q), []string{"c"}; !slices.Equal(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}
	f.setDown(true)
	if err := q.Replay(context.Background()); !errors.Is(err, errDown) {
		t.Errorf("Replay while down = %v, want %v", err, errDown)
	}
	if q.Len() != 1 {
		t.Errorf("Len() = %d after a failed replay, want 1 (kept)", q.Len())
	}
	if got := q.Counts().Replayed; got != 2 {
		t.Errorf("Counts().Replayed = %d, want 2", got)
	}
}

// A key queued again while its replay is out stays queued: the replay
// was sent before the newer invalidation, which it does not stand for.
func TestRequeuedDuringReplayStays(t *testing.T) {
	f := &fakeRedis{}
	var dropped []string
	q := newQueue(f, 10, &dropped)
	q.Add("a")
	f.during = func() { q.Add("a") }
	if err := q.Replay(context.Background()); err != nil {
		t.Fatalf("Replay = %v", err)
	}
	if !q.Has("a") {
		t.Errorf("Has(a) = false after it was queued again during its replay, want true")
	}
	f.during = nil
	if err := q.Replay(context.Background()); err != nil || q.Has("a") {
		t.Errorf("second Replay = %v, Has(a) = %v; want nil, false", err, q.Has("a"))
	}
}

func TestSettledRemovesOnlyOlderEntries(t *testing.T) {
	var dropped []string
	q := newQueue(&fakeRedis{}, 10, &dropped)
	q.Add("a", "b")
	before := q.Seq()
	q.Add("b") // queued after the direct call began: newer than it
	q.Settled(before, "a", "b", "zz")
	if got, want := pendingKeys(q), []string{"b"}; !slices.Equal(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}
}

func TestCheck(t *testing.T) {
	var dropped []string
	f := &fakeRedis{}
	q := newQueue(f, 10, &dropped)

	m := q.Mark()
	if v := q.Check("a", m); v != Clean {
		t.Errorf("Check(a) with nothing queued = %v, want Clean", v)
	}
	q.Add("a")
	if v := q.Check("a", m); v != Pending {
		t.Errorf("Check(a) after Add(a) = %v, want Pending", v)
	}
	if v := q.Check("b", m); v != Clean {
		t.Errorf("Check(b), never queued = %v, want Clean", v)
	}

	m = q.Mark() // a pending when the read is sent
	if v := q.Check("b", m); v != Clean {
		t.Errorf("Check(b) with a pending and nothing removed = %v, want Clean", v)
	}
	if err := q.ApplyKey(context.Background(), "a"); err != nil {
		t.Fatalf("ApplyKey(a) = %v", err)
	}
	if v := q.Check("a", m); v != Replayed {
		t.Errorf("Check(a) of a read sent before a's replay = %v, want Replayed", v)
	}
	if v := q.Check("a", q.Mark()); v != Clean {
		t.Errorf("Check(a) of a read sent after a's replay = %v, want Clean", v)
	}
}

func TestFlush(t *testing.T) {
	f := &fakeRedis{down: true}
	var dropped []string
	q := newQueue(f, 10, &dropped)
	q.Add("a", "b", "c")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Flush(ctx); !errors.Is(err, errDown) {
		t.Errorf("Flush while down = %v, want %v", err, errDown)
	}
	f.setDown(false)
	if err := q.Flush(context.Background()); err != nil {
		t.Fatalf("Flush = %v, want nil", err)
	}
	if got, want := f.appliedKeys(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v", got, want)
	}
}

func TestRunReplaysWhenRedisComesBack(t *testing.T) {
	f := &fakeRedis{down: true}
	var dropped []string
	q := newQueue(f, 10, &dropped)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	q.Add("a", "b", "c")
	time.Sleep(100 * time.Millisecond) // a few failed rounds
	if q.Len() != 3 {
		t.Fatalf("Len() = %d while Redis is down, want 3", q.Len())
	}
	f.setDown(false)
	healed := time.Now()
	q.Kick()
	for q.Len() > 0 {
		if time.Since(healed) > 5*time.Second {
			t.Fatalf("Len() = %d 5s after Redis came back, want 0", q.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := q.Counts().Replayed; got != 3 {
		t.Errorf("Counts().Replayed = %d, want 3", got)
	}
}
