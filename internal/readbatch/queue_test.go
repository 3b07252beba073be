package readbatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode is a node whose reads report their keys on started, when
// started is not nil, and then wait for a value on release, when release
// is not nil. The value of key k is "v:" + k.
type fakeNode struct {
	started chan []string
	release chan struct{}
	err     error

	mu    sync.Mutex
	calls [][]string
}

func (f *fakeNode) read(keys []string) error {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(keys))
	f.mu.Unlock()
	if f.started != nil {
		f.started <- slices.Clone(keys)
	}
	if f.release != nil {
		<-f.release
	}
	return f.err
}

func (f *fakeNode) one(ctx context.Context, key string) ([]byte, error) {
	if err := f.read([]string{key}); err != nil {
		return nil, err
	}
	return []byte("v:" + key), nil
}

func (f *fakeNode) many(ctx context.Context, keys []string, vals [][]byte) error {
	if err := f.read(keys); err != nil {
		return err
	}
	for i, k := range keys {
		vals[i] = []byte("v:" + k)
	}
	return nil
}

func (f *fakeNode) queue(max int) *Queue { return New(f.one, f.many, max, nil) }

func (f *fakeNode) callKeys() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// waiting waits until n callers wait in q's unsent batches.
func waiting(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		q.mu.Lock()
		got := 0
		for _, b := range q.pending {
			got += b.members
		}
		q.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers wait for a batch, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// get runs q.Get(ctx, key) on a goroutine and returns where its answer
// arrives.
func get(ctx context.Context, q *Queue, key string) <-chan string {
	out := make(chan string, 1)
	go func() {
		v, err := q.Get(ctx, key)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		out <- string(v)
	}()
	return out
}

// TestLoneReadsGoAtOnce: one caller at a time never waits for company:
// each read is sent at once, alone, with one.
func TestLoneReadsGoAtOnce(t *testing.T) {
	f := &fakeNode{}
	q := f.queue(64)
	for i := range 100 {
		k := fmt.Sprint(i)
		if v, err := q.Get(context.Background(), k); err != nil || string(v) != "v:"+k {
			t.Fatalf("Get(%q) = %q, %v, want %q", k, v, err, "v:"+k)
		}
	}
	if s := q.Stats(); s.Lone != 100 || s.Batches != 0 {
		t.Errorf("Stats() = %+v, want 100 lone reads and no batch", s)
	}
}

// TestReadsDuringAReadGoTogether: reads that arrive while one is in
// flight are sent as one batch once it ends, each caller handed its own
// key's value.
func TestReadsDuringAReadGoTogether(t *testing.T) {
	f := &fakeNode{started: make(chan []string, 10), release: make(chan struct{})}
	q := f.queue(64)
	ctx := context.Background()
	first := get(ctx, q, "a")
	if got := <-f.started; !slices.Equal(got, []string{"a"}) {
		t.Fatalf("first read = %q, want [a]", got)
	}
	var outs []<-chan string
	for _, k := range []string{"b", "c", "d", "e"} {
		outs = append(outs, get(ctx, q, k))
	}
	waiting(t, q, 4)
	select {
	case got := <-f.started:
		t.Fatalf("read %q sent while another was in flight", got)
	default:
	}
	f.release <- struct{}{}
	if v := <-first; v != "v:a" {
		t.Errorf("Get(a) = %q, want v:a", v)
	}
	batch := <-f.started
	slices.Sort(batch)
	if !slices.Equal(batch, []string{"b", "c", "d", "e"}) {
		t.Errorf("batch = %q, want [b c d e]", batch)
	}
	f.release <- struct{}{}
	for i, k := range []string{"b", "c", "d", "e"} {
		if v := <-outs[i]; v != "v:"+k {
			t.Errorf("Get(%s) = %q, want v:%s", k, v, k)
		}
	}
	if s := q.Stats(); s.Lone != 1 || s.Batches != 1 || s.Batched != 4 {
		t.Errorf("Stats() = %+v, want 1 lone read and 1 batch of 4", s)
	}
}

// TestBatchCap: at most max keys go in one batch; the rest wait for the
// next one, and one read of the node is in flight at a time.
func TestBatchCap(t *testing.T) {
	f := &fakeNode{started: make(chan []string, 10), release: make(chan struct{})}
	q := f.queue(3)
	ctx := context.Background()
	first := get(ctx, q, "x")
	<-f.started
	var outs []<-chan string
	for i := range 7 {
		outs = append(outs, get(ctx, q, fmt.Sprint(i)))
		waiting(t, q, i+1) // in order, so that the batches are predictable
	}
	f.release <- struct{}{} // x
	for _, want := range []int{3, 3, 1} {
		if got := <-f.started; len(got) != want {
			t.Errorf("batch %q has %d keys, want %d", got, len(got), want)
		}
		select {
		case got := <-f.started:
			t.Fatalf("read %q sent while another was in flight", got)
		case <-time.After(10 * time.Millisecond):
		}
		f.release <- struct{}{}
	}
	<-first
	for i, out := range outs {
		if v := <-out; v != fmt.Sprint("v:", i) {
			t.Errorf("Get(%d) = %q, want v:%d", i, v, i)
		}
	}
}

// TestNeverAReplyFromBefore is the consistency promise under load: the
// value a caller gets was read after it called. The node's value is a
// counter that a writer bumps all the time; each caller notes the counter
// before it calls and must get at least that.
func TestNeverAReplyFromBefore(t *testing.T) {
	var version atomic.Int64
	read := func() []byte { return []byte(fmt.Sprint(version.Load())) }
	q := New(func(ctx context.Context, key string) ([]byte, error) {
		time.Sleep(50 * time.Microsecond)
		return read(), nil
	}, func(ctx context.Context, keys []string, vals [][]byte) error {
		v := read() // the moment the round trip reads the node
		time.Sleep(50 * time.Microsecond)
		for i := range vals {
			vals[i] = v
		}
		return nil
	}, 8, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				version.Add(1)
				time.Sleep(time.Microsecond)
			}
		}
	})
	var readers sync.WaitGroup
	for g := range 32 {
		readers.Go(func() {
			for range 300 {
				before := version.Load()
				v, err := q.Get(context.Background(), fmt.Sprint(g))
				var got int64
				if _, serr := fmt.Sscan(string(v), &got); err != nil || serr != nil || got < before {
					t.Errorf("Get = %s, %v after the node was at %d: a reply to a read sent before the call", v, err, before)
					return
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	if s := q.Stats(); s.Batches == 0 || s.Batched <= s.Batches {
		t.Errorf("Stats() = %+v: 32 goroutines never shared a batch", s)
	}
}

// TestLeaderLeaves: when the caller that would send a batch leaves, one of
// the callers left behind sends it.
func TestLeaderLeaves(t *testing.T) {
	f := &fakeNode{started: make(chan []string, 10), release: make(chan struct{})}
	q := f.queue(64)
	first := get(context.Background(), q, "a")
	<-f.started
	ctx, cancel := context.WithCancel(context.Background())
	leader := get(ctx, q, "b")
	waiting(t, q, 1)
	follower := get(context.Background(), q, "c")
	waiting(t, q, 2)
	cancel()
	if v := <-leader; v != "error: "+context.Canceled.Error() {
		t.Errorf("cancelled Get(b) = %q, want %v", v, context.Canceled)
	}
	waiting(t, q, 1)
	f.release <- struct{}{}
	<-first
	if got := <-f.started; len(got) != 2 {
		t.Errorf("batch = %q, want [b c]: the keys of callers who left are still read", got)
	}
	f.release <- struct{}{}
	if v := <-follower; v != "v:c" {
		t.Errorf("Get(c) = %q, want v:c", v)
	}
	if s := q.Stats(); s.Left != 1 {
		t.Errorf("Stats().Left = %d, want 1", s.Left)
	}
}

// TestAllLeave: a batch every caller left is not sent, and the queue is
// idle again once the read in flight ends.
func TestAllLeave(t *testing.T) {
	for _, granted := range []bool{false, true} {
		t.Run(fmt.Sprint("granted=", granted), func(t *testing.T) {
			f := &fakeNode{started: make(chan []string, 10), release: make(chan struct{})}
			q := f.queue(64)
			first := get(context.Background(), q, "a")
			<-f.started
			ctx, cancel := context.WithCancel(context.Background())
			left := get(ctx, q, "b")
			waiting(t, q, 1)
			if granted {
				// Cancel as the turn comes: leave races with the grant.
				f.release <- struct{}{}
				cancel()
				<-first
				select {
				case <-left: // left before its turn, or with it
				case <-f.started: // sent its batch before it saw the cancel
					f.release <- struct{}{}
					<-left
				}
			} else {
				cancel()
				<-left
				f.release <- struct{}{}
				<-first
			}
			f.release = nil
			if v, err := q.Get(context.Background(), "c"); err != nil || string(v) != "v:c" {
				t.Fatalf("Get(c) = %q, %v, want v:c", v, err)
			}
			if got := f.callKeys(); len(got) > 3 || !slices.Equal(got[len(got)-1], []string{"c"}) {
				t.Errorf("reads = %q, want [a], maybe [b], then [c] alone", got)
			}
		})
	}
}

// TestBatchError: a failed batch fails every caller in it.
func TestBatchError(t *testing.T) {
	boom := errors.New("boom")
	f := &fakeNode{started: make(chan []string, 10), release: make(chan struct{})}
	q := f.queue(64)
	first := get(context.Background(), q, "a")
	<-f.started
	b, c := get(context.Background(), q, "b"), get(context.Background(), q, "c")
	waiting(t, q, 2)
	f.release <- struct{}{}
	<-first
	<-f.started
	f.mu.Lock()
	f.err = boom
	f.mu.Unlock()
	f.release <- struct{}{}
	for _, out := range []<-chan string{b, c} {
		if v := <-out; v != "error: boom" {
			t.Errorf("Get in a failed batch = %q, want error: boom", v)
		}
	}
}

// TestBatchPanic: a ManyFunc that panics fails the batch's other callers
// with ErrPanicked, panics in the caller that sent it, and leaves the
// queue usable.
func TestBatchPanic(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	q := New(func(ctx context.Context, key string) ([]byte, error) {
		started <- struct{}{}
		<-release
		return []byte("v"), nil
	}, func(ctx context.Context, keys []string, vals [][]byte) error {
		panic("many")
	}, 64, nil)
	first := get(context.Background(), q, "a")
	<-started
	var panics atomic.Int64
	errs := make(chan error, 2)
	for _, k := range []string{"b", "c"} {
		go func() {
			defer func() {
				if recover() != nil {
					panics.Add(1)
					errs <- nil
				}
			}()
			_, err := q.Get(context.Background(), k)
			errs <- err
		}()
	}
	waiting(t, q, 2)
	release <- struct{}{}
	<-first
	for range 2 {
		if err := <-errs; err != nil && !errors.Is(err, ErrPanicked) {
			t.Errorf("Get in a batch that panicked = %v, want ErrPanicked", err)
		}
	}
	if panics.Load() != 1 {
		t.Errorf("%d callers panicked, want 1 (the one that sent the batch)", panics.Load())
	}
	go func() { <-started; release <- struct{}{} }()
	if v, err := q.Get(context.Background(), "d"); err != nil || string(v) != "v" {
		t.Errorf("Get after the panic = %q, %v, want v", v, err)
	}
}

// TestGroupQueuePerNode: each node has its own queue, made once.
func TestGroupQueuePerNode(t *testing.T) {
	f := &fakeNode{}
	g := NewGroup(f.one, f.many, 8, nil)
	a, b := g.For("a"), g.For("b")
	if a == b || g.For("a") != a || g.For("") == a {
		t.Fatalf("For gives one queue to two nodes, or two to one")
	}
	for _, q := range []*Queue{a, b, a} {
		if _, err := q.Get(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if s := g.Stats(); s.Lone != 3 {
		t.Errorf("Stats().Lone = %d, want 3", s.Lone)
	}
}

// TestShed: when a read fails with an error to shed, the batches waiting
// behind it fail with it unsent; other errors, and a read whose caller
// left, shed nothing.
func TestShed(t *testing.T) {
	silent, other := errors.New("silent"), errors.New("other")
	for _, tc := range []struct {
		name   string
		err    error
		cancel bool // the lone read's caller leaves
		shed   bool
	}{
		{"silent", silent, false, true},
		{"other", other, false, false},
		{"caller left", silent, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNode{started: make(chan []string, 10), release: make(chan struct{})}
			q := New(f.one, f.many, 64, func(err error) bool { return errors.Is(err, silent) })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := get(ctx, q, "a")
			<-f.started
			b, c := get(context.Background(), q, "b"), get(context.Background(), q, "c")
			waiting(t, q, 2)
			f.mu.Lock()
			f.err = tc.err
			f.mu.Unlock()
			if tc.cancel {
				cancel()
			}
			f.release <- struct{}{}
			<-first
			if !tc.shed {
				<-f.started // the batch goes out
				f.release <- struct{}{}
			}
			want := "error: " + tc.err.Error()
			if tc.shed {
				want = "error: " + ErrShed.Error() + ": " + tc.err.Error()
			}
			for _, out := range []<-chan string{b, c} {
				if v := <-out; v != want {
					t.Errorf("Get behind a failed read = %q, want %q", v, want)
				}
			}
			wantShed := uint64(0)
			if tc.shed {
				wantShed = 2
			}
			if s := q.Stats(); s.Shed != wantShed || len(f.callKeys()) != 2-int(wantShed/2) {
				t.Errorf("Stats() = %+v after %d reads, want %d shed", s, len(f.callKeys()), wantShed)
			}
		})
	}
}
