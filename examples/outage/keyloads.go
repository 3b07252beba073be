package main

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// The outage's database calls of each key, by instance: the summary keeps
// the most calls of one key (all instances together), and every key that
// one instance called more than once keeps its calls, to say why.

// keyLoad is one database call of a key during the outage.
type keyLoad struct {
	// Instance is the instance that called, or -1 when the call's
	// context did not say.
	Instance int   `json:"instance"`
	Key      int64 `json:"key"`
	// StartMs and EndMs are when the call began and returned, in
	// milliseconds since the kill began.
	StartMs float64 `json:"start_ms"`
	EndMs   float64 `json:"end_ms"`
	// Returned reports that the call returned before the recording
	// stopped (EndMs is then set).
	Returned bool `json:"returned"`
	// Err is the call's error, if any: a load that failed leaves nothing
	// to answer the next Get with.
	Err string `json:"err,omitempty"`
	// Request reports that the call ran for a request (a Get's flight,
	// which carries its first caller's values); otherwise the cache
	// loaded on its own (a warm-up, a refresh).
	Request bool `json:"request"`
	// Via names, for a call the cache made on its own, the functions of
	// the cacheaside package it came through, innermost first: which
	// path loaded (a warm-up's batch, a single key's, a refresh).
	Via string `json:"via,omitempty"`
}

// instanceKey and requestKey are the context keys under which a request
// says which instance serves it, and that it is a request; a cacheaside
// loader adds its instance to every context it loads under.
type (
	instanceKey struct{}
	requestKey  struct{}
)

func withInstance(ctx context.Context, i int) context.Context {
	return context.WithValue(ctx, instanceKey{}, i)
}

// keyLoads records the database calls of each key from start until stop.
type keyLoads struct {
	mu    sync.Mutex
	since time.Time
	calls []*keyLoad // nil when not recording
}

// start begins recording, from zero.
func (k *keyLoads) start() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.since = time.Now()
	k.calls = []*keyLoad{}
}

// begin records the start of a call of id under ctx and returns the
// function that records its end (a no-op when not recording).
func (k *keyLoads) begin(ctx context.Context, id int64) func(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.calls == nil {
		return func(error) {}
	}
	inst, ok := ctx.Value(instanceKey{}).(int)
	if !ok {
		inst = -1
	}
	c := &keyLoad{Instance: inst, Key: id, StartMs: ms(time.Since(k.since)), Request: ctx.Value(requestKey{}) != nil}
	if !c.Request {
		c.Via = cacheasideFrames()
	}
	k.calls = append(k.calls, c)
	since := k.since
	return func(err error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		c.EndMs, c.Returned = ms(time.Since(since)), true
		if err != nil {
			c.Err = err.Error()
		}
	}
}

// cacheasideFrames names the functions of package cacheaside (not its
// internal packages) on the caller's stack, innermost first, at most
// eight. The cache calls its loader on a goroutine of its own, so the path
// that asked for the load shows only with the stacks of the goroutines
// that started it: run with GODEBUG=tracebackancestors=10.
func cacheasideFrames() string {
	buf := make([]byte, 64<<10)
	buf = buf[:runtime.Stack(buf, false)]
	const pkg = "github.com/cacheaside/cacheaside."
	var names []string
	for line := range strings.Lines(string(buf)) {
		name, ok := strings.CutPrefix(line, pkg)
		if !ok || len(names) == 8 {
			continue
		}
		if i := strings.LastIndexByte(name, '('); i > 0 {
			name = name[:i]
		}
		if len(names) == 0 || names[len(names)-1] != name {
			names = append(names, name)
		}
	}
	return strings.Join(names, " < ")
}

// stop ends recording. It returns the most calls of one key (all
// instances together), how many calls repeated a call of the same key by
// the same instance (see repeated), and, for every key that one instance
// called more than once, its calls by that instance in the order they
// began.
func (k *keyLoads) stop() (most, repeats uint64, calls [][]keyLoad) {
	k.mu.Lock()
	defer k.mu.Unlock()
	perKey := map[int64]uint64{}
	type ik struct {
		inst int
		key  int64
	}
	perInst := map[ik][]keyLoad{}
	for _, c := range k.calls { // in the order they began
		perKey[c.Key]++
		most = max(most, perKey[c.Key])
		perInst[ik{c.Instance, c.Key}] = append(perInst[ik{c.Instance, c.Key}], *c)
	}
	for _, cs := range perInst {
		if len(cs) > 1 {
			repeats += repeated(cs)
			calls = append(calls, cs)
		}
	}
	slices.SortFunc(calls, func(a, b []keyLoad) int {
		return cmp.Or(cmp.Compare(a[0].Instance, b[0].Instance), cmp.Compare(a[0].Key, b[0].Key))
	})
	k.calls = nil
	return most, repeats, calls
}

// repeated counts the calls of cs, one instance's calls of one key in the
// order they began, that came after a call that returned the row or
// while an earlier call still ran: those the promise of L1.OutageOnly
// excludes (one load per key per process, its result kept in L1, one
// flight per key in a process). A call after calls that all failed is
// not one: a failed load leaves nothing to answer the next Get with.
func repeated(cs []keyLoad) uint64 {
	var n uint64
	for i, c := range cs {
		for _, e := range cs[:i] {
			if e.Err == "" || !e.Returned || e.EndMs > c.StartMs {
				n++
				break
			}
		}
	}
	return n
}

// describeRepeats lists the calls of keys one instance called more than
// once, one line per call.
func describeRepeats(repeats [][]keyLoad) string {
	var b strings.Builder
	for _, cs := range repeats {
		fmt.Fprintf(&b, "instance %d, key %d: %d calls\n", cs[0].Instance, cs[0].Key, len(cs))
		for _, c := range cs {
			kind := "background"
			if c.Request {
				kind = "request"
			}
			end := "still running"
			if c.Returned {
				end = fmt.Sprintf("%.0fms", c.EndMs)
			}
			if c.Via != "" {
				kind += " (" + c.Via + ")"
			}
			fmt.Fprintf(&b, "  %s: %.0fms-%s after the kill began, err %q\n", kind, c.StartMs, end, c.Err)
		}
	}
	return b.String()
}
