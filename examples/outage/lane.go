package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// lane is one strategy under load: its database, its per-second windows,
// and the cumulative counters sampled at each second's end.
type lane struct {
	s        strategy
	db       *meteredDB
	inflight atomic.Int64

	mu  sync.Mutex
	win []window // one per second of the run

	lastQueries uint64
	backAfter   time.Duration // from the restart until redisBack; 0 until then

	// The Gets the cache answered so far (all, and from its in-process
	// cache), whenever they ended, and their counts when Redis went down
	// and when it answered again: what the cache did while Redis was
	// down, whichever seconds that took on a busy machine.
	answered, local atomic.Uint64
	atDown, atUp    [2]uint64 // answered, local
}

// window is what one lane did in one second. Requests, errors,
// latencies and how the cache answered are recorded when a request
// completes, under the second it ended in; the database counters and the
// breakers are sampled at the second's end.
type window struct {
	requests, errors, shed uint64
	returned               uint64 // errors the strategy returned, other than the deadline
	lat                    []time.Duration
	dbQueries              uint64
	dbLat                  []time.Duration
	counts                 cacheCounts
}

// cacheCounts are what a strategy's caches did in one second.
type cacheCounts struct {
	gets      uint64 // requests the cache answered: hits + misses
	hits      uint64 // answered from Redis or the in-process cache
	localHits uint64 // of hits, answered from the in-process cache
	open      int    // instances whose circuit breaker was not closed at the second's end
}

// record files a completed (or shed) request, and how the cache answered
// it, under the second it ended in: a sampling loop that wakes late (two
// cores shared with other jobs) cannot move a request's answer to another
// second.
func (l *lane) record(t0 time.Time, d time.Duration, failed, shed bool, a answer, err error) {
	i := min(int(time.Since(t0)/time.Second), len(l.win)-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	w := &l.win[i]
	w.requests++
	w.counts.add(a)
	if a != answerNone {
		l.answered.Add(1)
	}
	if a == answerLocal {
		l.local.Add(1)
	}
	if failed {
		w.errors++
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		w.returned++
	}
	if shed {
		w.shed++
		return
	}
	w.lat = append(w.lat, d)
}

func (c *cacheCounts) add(a answer) {
	if a == answerNone {
		return
	}
	c.gets++
	if a == answerHit || a == answerLocal {
		c.hits++
	}
	if a == answerLocal {
		c.localHits++
	}
}

// markDown notes the Gets answered so far, when Redis has gone down.
func (l *lane) markDown() { l.atDown = [2]uint64{l.answered.Load(), l.local.Load()} }

// markUp notes the Gets answered so far, when Redis answers again.
func (l *lane) markUp() { l.atUp = [2]uint64{l.answered.Load(), l.local.Load()} }

// whileDown returns the Gets answered between markDown and markUp, and of
// them those answered from the in-process cache.
func (l *lane) whileDown() (answered, local uint64) {
	return l.atUp[0] - l.atDown[0], l.atUp[1] - l.atDown[1]
}

// trim ends the timeline at n seconds: the requests filed under later
// seconds (they ended after the last one) go to the last.
func (l *lane) trim(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last := &l.win[n-1]
	for _, w := range l.win[n:] {
		last.requests += w.requests
		last.errors += w.errors
		last.shed += w.shed
		last.returned += w.returned
		last.counts.gets += w.counts.gets
		last.counts.hits += w.counts.hits
		last.counts.localHits += w.counts.localHits
		last.lat = append(last.lat, w.lat...)
	}
	l.win = l.win[:n]
}

// sample closes second i: the database queries since the last sample,
// the database latencies and the breakers open now go to its window.
func (l *lane) sample(i int) {
	q, open := l.db.queries(), l.s.breakersOpen()
	lat := l.db.drain()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := &l.win[i]
	w.dbQueries += q - l.lastQueries
	w.dbLat = append(w.dbLat, lat...)
	w.counts.open = open
	l.lastQueries = q
}
