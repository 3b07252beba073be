package cacheotel_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestLoadSpansHaveCallerParent checks that each load runs in a span whose
// parent is the span in the context of the Get that started it, and that
// the span's status and outcome follow the loader's answer.
func TestLoadSpansHaveCallerParent(t *testing.T) {
	r := newRig(t, loadProduct)
	tracer := r.tracer.Tracer("test")

	for _, tc := range []struct {
		key     int64
		outcome string
		status  codes.Code
	}{
		{1, "ok", codes.Unset},
		{2, "not_found", codes.Unset},
		{3, "error", codes.Error},
	} {
		r.spans.Reset()
		ctx, parent := tracer.Start(context.Background(), "GET /products/{id}")
		_, _ = r.cache.Get(ctx, tc.key)
		parent.End()

		spans := loadSpans(r)
		if len(spans) != 1 {
			t.Fatalf("Get(%d) recorded %d cacheaside.load spans, want 1", tc.key, len(spans))
		}
		s := spans[0]
		if got, want := s.Parent().SpanID(), parent.SpanContext().SpanID(); got != want {
			t.Errorf("Get(%d): load span parent = %v, want the caller's span %v", tc.key, got, want)
		}
		if got, want := s.SpanContext().TraceID(), parent.SpanContext().TraceID(); got != want {
			t.Errorf("Get(%d): load span trace = %v, want %v", tc.key, got, want)
		}
		if got := spanAttr(s, "outcome"); got != tc.outcome {
			t.Errorf("Get(%d): outcome attribute = %q, want %q", tc.key, got, tc.outcome)
		}
		if got := spanAttr(s, "cache"); got != cacheName {
			t.Errorf("Get(%d): cache attribute = %q, want %q", tc.key, got, cacheName)
		}
		if s.Status().Code != tc.status {
			t.Errorf("Get(%d): span status = %v, want %v", tc.key, s.Status().Code, tc.status)
		}
		if tc.status == codes.Error && len(s.Events()) == 0 {
			t.Errorf("Get(%d): error span has no exception event", tc.key)
		}
	}

	// A hit calls no loader and records no span.
	r.spans.Reset()
	if _, err := r.cache.Get(context.Background(), 1); err != nil {
		t.Fatalf("Get(1) = %v", err)
	}
	if n := len(loadSpans(r)); n != 0 {
		t.Errorf("a hit recorded %d cacheaside.load spans, want 0", n)
	}
}

// TestCoalescedCallersShareOneLoadSpan documents the limit of tracing a
// shared load: two callers, one load, and the span is a child of the
// caller that started the flight only, when waiter contexts are turned
// off (they are recorded by default, see TestLoadSpanLinksWaiters).
func TestCoalescedCallersShareOneLoadSpan(t *testing.T) {
	f := newFlightRig(t, cacheaside.WithWaiterContexts(false)) //nolint:staticcheck // the deprecated opt-out still works
	first := f.get("first caller")
	<-f.entered // the first caller's flight is loading
	second := f.get("second caller")
	time.Sleep(50 * time.Millisecond) // let the second caller join the flight
	close(f.release)
	f.wg.Wait()
	r := f.rig

	if s := r.cache.Stats(); s.Loads != 1 {
		t.Errorf("Stats().Loads = %d, want 1 for two coalesced Gets", s.Loads)
	}
	spans := loadSpans(r)
	if len(spans) != 1 {
		t.Fatalf("recorded %d cacheaside.load spans, want 1", len(spans))
	}
	if got := spans[0].Parent().SpanID(); got != first.SpanContext().SpanID() {
		t.Errorf("load span parent = %v, want the first caller's span %v", got, first.SpanContext().SpanID())
	}
	for _, l := range spans[0].Links() {
		if l.SpanContext.SpanID() == second.SpanContext().SpanID() {
			t.Errorf("load span links the second caller with WithWaiterContexts(false)")
		}
	}
}

// TestLoadSpanLinksWaiters: by default, the load span of a
// flight links the spans of the three Gets that joined it, and not the
// span of the Get that started it (its parent).
func TestLoadSpanLinksWaiters(t *testing.T) {
	f := newFlightRig(t)
	first := f.get("first caller")
	<-f.entered
	var waiting []trace.Span
	for i := range 3 {
		waiting = append(waiting, f.get(fmt.Sprintf("waiter %d", i)))
	}
	time.Sleep(50 * time.Millisecond) // let them join the flight
	close(f.release)
	f.wg.Wait()
	r := f.rig

	spans := loadSpans(r)
	if len(spans) != 1 {
		t.Fatalf("recorded %d cacheaside.load spans, want 1", len(spans))
	}
	linked := map[trace.SpanID]bool{}
	for _, l := range spans[0].Links() {
		linked[l.SpanContext.SpanID()] = true
	}
	for i, w := range waiting {
		if !linked[w.SpanContext().SpanID()] {
			t.Errorf("load span does not link waiter %d", i)
		}
	}
	if linked[first.SpanContext().SpanID()] || len(linked) != len(waiting) {
		t.Errorf("load span links %d spans (the first caller's: %v), want exactly the %d waiters",
			len(linked), linked[first.SpanContext().SpanID()], len(waiting))
	}
}

// explode is a loader that panics; its name must survive in the stack the
// cache reports.
func explode(context.Context, int64) (product, error) { panic("boom") }

// TestLoaderPanic checks that a panic is recorded and still reaches the
// cache with the loader's own stack.
func TestLoaderPanic(t *testing.T) {
	r := newRig(t, explode)
	_, err := r.cache.Get(context.Background(), 1)
	var pe *cacheaside.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Get(1) = %v, want a *cacheaside.PanicError", err)
	}
	if !strings.Contains(string(pe.Stack), "otel_test.explode") {
		t.Errorf("PanicError.Stack does not show the loader that panicked:\n%s", pe.Stack)
	}
	if got := histogramCounts(t, collect(t, r.reader), "cacheaside.load.duration"); got["error"] != 1 || len(got) != 1 {
		t.Errorf("cacheaside.load.duration counts = %v, want map[error:1]", got)
	}
	spans := loadSpans(r)
	if len(spans) != 1 || spans[0].Status().Code != codes.Error {
		t.Fatalf("load spans = %v, want one with status Error", spans)
	}
	if got := spans[0].Status().Description; got != "loader panicked" {
		t.Errorf("span status description = %q, want \"loader panicked\"", got)
	}
}

// TestLoadTimeoutIsAnError checks that a load cut off by the load timeout
// counts as outcome error.
func TestLoadTimeoutIsAnError(t *testing.T) {
	r := newRig(t, func(ctx context.Context, id int64) (product, error) {
		<-ctx.Done()
		return product{}, ctx.Err()
	}, cacheaside.WithLoadTimeout(20*time.Millisecond))
	if _, err := r.cache.Get(context.Background(), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get(1) = %v, want context.DeadlineExceeded", err)
	}
	if got := histogramCounts(t, collect(t, r.reader), "cacheaside.load.duration"); got["error"] != 1 {
		t.Errorf("cacheaside.load.duration counts = %v, want one error", got)
	}
}

// TestWithoutTracerProvider checks that no span is made unless a
// TracerProvider is given, even when the caller's context has a span.
func TestWithoutTracerProvider(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	load := cacheotel.WrapLoader(loadProduct, cacheotel.WithMeterProvider(metricnoop.NewMeterProvider()))

	ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
	if _, err := load(ctx, 1); err != nil {
		t.Fatalf("load(1) = %v", err)
	}
	parent.End()
	if got := spans.Ended(); len(got) != 1 || got[0].Name() != "caller" {
		t.Errorf("recorded spans %v, want only the caller's", got)
	}
}

func TestWrapLoaderNil(t *testing.T) {
	if got := cacheotel.WrapLoader[int64, product](nil); got != nil {
		t.Error("WrapLoader(nil) != nil, want nil so that cacheaside.New reports it")
	}
}

// TestWrapBatchLoader checks that each call of a batch loader is one load
// in the histogram and one span that counts the keys.
func TestWrapBatchLoader(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	}()
	load := cacheotel.WrapBatchLoader(func(ctx context.Context, ids []int64) (map[int64]product, error) {
		if len(ids) > 2 {
			return nil, errDatabase
		}
		out := map[int64]product{}
		for _, id := range ids {
			if p, err := loadProduct(ctx, id); err == nil {
				out[id] = p
			}
		}
		return out, nil
	}, cacheotel.WithMeterProvider(mp), cacheotel.WithTracerProvider(tp), cacheotel.WithName(cacheName))

	ctx := context.Background()
	if m, err := load(ctx, []int64{1, 2}); err != nil || len(m) != 1 {
		t.Fatalf("load([1 2]) = %v, %v, want product 1 only", m, err)
	}
	if _, err := load(ctx, []int64{1, 2, 3}); !errors.Is(err, errDatabase) {
		t.Fatalf("load([1 2 3]) error = %v, want %v", err, errDatabase)
	}

	want := map[string]uint64{"ok": 1, "error": 1}
	if got := histogramCounts(t, collect(t, reader), "cacheaside.load.duration"); !reflect.DeepEqual(got, want) {
		t.Errorf("cacheaside.load.duration counts = %v, want %v", got, want)
	}
	ended := spans.Ended()
	if len(ended) != 2 {
		t.Fatalf("recorded %d spans, want 2", len(ended))
	}
	for i, wantKeys := range []int64{2, 3} {
		var keys int64
		for _, kv := range ended[i].Attributes() {
			if kv.Key == "cacheaside.batch.keys" {
				keys = kv.Value.AsInt64()
			}
		}
		if keys != wantKeys {
			t.Errorf("span %d: cacheaside.batch.keys = %d, want %d", i, keys, wantKeys)
		}
	}
	if ended[1].Status().Code != codes.Error {
		t.Errorf("failed batch span status = %v, want Error", ended[1].Status().Code)
	}
}

// flightRig is a rig whose loader stalls on its first call until release
// is closed, with Gets that each run in a span of their own.
type flightRig struct {
	*rig
	entered, release chan struct{}
	wg               sync.WaitGroup
	t                *testing.T
}

func newFlightRig(t *testing.T, opts ...cacheaside.Option) *flightRig {
	f := &flightRig{entered: make(chan struct{}), release: make(chan struct{}), t: t}
	var once sync.Once
	f.rig = newRig(t, func(ctx context.Context, id int64) (product, error) {
		once.Do(func() { close(f.entered) })
		select {
		case <-f.release:
		case <-ctx.Done():
			return product{}, ctx.Err()
		}
		return loadProduct(ctx, id)
	}, opts...)
	return f
}

// get starts a Get of product 1 in a new span named name and returns the
// span, which ends when the Get returns.
func (f *flightRig) get(name string) trace.Span {
	ctx, span := f.tracer.Tracer("test").Start(context.Background(), name)
	f.wg.Go(func() {
		defer span.End()
		if p, err := f.cache.Get(ctx, 1); err != nil || p.Name != "teapot" {
			f.t.Errorf("Get(1) from %s = %+v, %v, want teapot", name, p, err)
		}
	})
	return span
}
