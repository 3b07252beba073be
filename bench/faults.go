package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

type faultResult struct {
	name                  string
	requests, errs, loads int64
	lat                   []time.Duration // sorted
	window                time.Duration
	notes                 string
}

// fault is a way for Redis to fail: inject starts it, heal (if not nil)
// ends it when the window closes, and deadline (if positive) is each
// request's context deadline; a request that takes longer is an error.
type fault struct {
	name     string
	inject   func(*server) error
	heal     func(*server) error
	deadline time.Duration
}

var (
	killed = fault{name: "killed", inject: func(s *server) error { s.kill(); return nil }}
	frozen = fault{name: "frozen", inject: (*server).freeze, heal: (*server).thaw, deadline: faultDeadline}
)

// faultRow is one strategy under a fault: every kind on a default
// client, and cacheaside once more on a ContextTimeoutEnabled client.
type faultRow struct {
	name string
	kind kind
	ctxT bool
}

func faultRows() []faultRow {
	var rows []faultRow
	for _, k := range kinds {
		rows = append(rows, faultRow{name: k.name, kind: k})
		if k.name == nameCacheaside {
			rows = append(rows, faultRow{name: nameCacheaside + " (ContextTimeoutEnabled client)", kind: k, ctxT: true})
		}
	}
	return rows
}

// measureFault runs each strategy on a Redis of its own: warm faultKeys
// keys, inject the fault, have faultWorkers goroutines Get for the fault
// window, heal, and wait for the requests in flight.
func (e *env) measureFault(ctx context.Context, f fault) ([]faultResult, error) {
	var res []faultResult
	for _, row := range faultRows() {
		r, err := e.faultTrial(ctx, f, row)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", f.name, row.name, err)
		}
		e.progress("%s %-48s %d requests, %d errors, %d loads", f.name, row.name, r.requests, r.errs, r.loads)
		res = append(res, r)
	}
	return res, nil
}

func (e *env) faultTrial(ctx context.Context, f fault, row faultRow) (faultResult, error) {
	srv, err := startServer(ctx)
	if err != nil {
		return faultResult{}, err
	}
	defer srv.close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ContextTimeoutEnabled: row.ctxT})
	defer rdb.Close()
	db := &database{}
	db.delay.Store(int64(faultLoad))
	s, err := row.kind.open(rdb, db, "f:")
	if err != nil {
		return faultResult{}, err
	}
	defer s.close()
	ids := make([]int64, faultKeys)
	for i := range ids {
		ids[i] = int64(i)
	}
	if err := s.warm(ctx, ids); err != nil {
		return faultResult{}, err
	}
	if err := warmByGet(ctx, s, ids); err != nil { // every strategy reads each key once more
		return faultResult{}, err
	}
	loads0 := db.calls.Load()
	if err := f.inject(srv); err != nil {
		return faultResult{}, err
	}
	var healErr error
	atEnd := func() {
		if f.heal != nil {
			healErr = f.heal(srv)
		}
	}
	w := hammer(ctx, faultWorkers, e.cfg.faultDuration, true, atEnd, func(ctx context.Context, w int, i int64) bool {
		id := (int64(w)*13 + i) % faultKeys
		if f.deadline > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, f.deadline)
			defer cancel()
		}
		t0 := time.Now()
		p, err := s.get(ctx, id)
		return checked(p, err, id) || (f.deadline > 0 && time.Since(t0) > f.deadline)
	})
	return faultResult{
		name:     row.name,
		requests: w.ops,
		errs:     w.errs,
		loads:    db.calls.Load() - loads0,
		lat:      w.lat,
		window:   w.elapsed,
		notes:    s.notes(),
	}, healErr
}
