package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

type stampedeResult struct {
	name  string
	loads []float64       // per stampede
	lat   []time.Duration // every caller of every stampede, sorted
	errs  int64
}

// measureStampede runs stampedeKeys stampedes per strategy, round-robin:
// stampedeInstances instances, each with its own client, and
// stampedePerInstance goroutines on each Get one cold key at once.
func (e *env) measureStampede(ctx context.Context) ([]stampedeResult, error) {
	n := len(kinds)
	res := make([]stampedeResult, n)
	insts := make([][]strategy, n)
	dbs := make([]*database, n)
	for ki, k := range kinds {
		res[ki].name = k.name
		dbs[ki] = &database{}
		dbs[ki].delay.Store(int64(stampedeLoad))
		for range stampedeInstances {
			rdb := redis.NewClient(&redis.Options{Addr: e.srv.addr()})
			defer rdb.Close()
			s, err := k.open(rdb, dbs[ki], fmt.Sprintf("s%d:", ki))
			if err != nil {
				return nil, err
			}
			defer s.close()
			insts[ki] = append(insts[ki], s)
		}
	}
	for key := range e.cfg.stampedeKeys {
		id := int64(1_000_000 + key)
		for _, ki := range rotated(n, key) {
			before := dbs[ki].calls.Load()
			lat, errs := burst(ctx, insts[ki], id, ki == 0)
			res[ki].loads = append(res[ki].loads, float64(dbs[ki].calls.Load()-before))
			res[ki].lat = append(res[ki].lat, lat...)
			res[ki].errs += errs
		}
		e.progress("stampede key %d/%d done", key+1, e.cfg.stampedeKeys)
	}
	for ki := range res {
		slices.Sort(res[ki].lat)
	}
	return res, ctx.Err()
}

// burst releases stampedePerInstance goroutines on every instance at once
// on key id and returns each one's latency from the release. For the raw
// baseline (missOK) a miss is the expected answer.
func burst(ctx context.Context, insts []strategy, id int64, missOK bool) ([]time.Duration, int64) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   []time.Duration
		errs  atomic.Int64
		start = make(chan struct{})
		t0    time.Time
	)
	for _, s := range insts {
		for range stampedePerInstance {
			wg.Go(func() {
				<-start
				p, err := s.get(ctx, id)
				d := time.Since(t0)
				if (missOK && !errors.Is(err, errMiss)) || (!missOK && checked(p, err, id)) {
					errs.Add(1)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			})
		}
	}
	t0 = time.Now()
	close(start)
	wg.Wait()
	return lat, errs.Load()
}
