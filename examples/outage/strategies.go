package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/redis/go-redis/v9"
)

// The two strategies share one Redis under different key prefixes.
const (
	textbookPrefix   = "outage:textbook:"
	cacheasidePrefix = "outage:cacheaside:"
)

// The cacheaside configuration under test. The values are the ones a
// team would pick for a product catalogue: a long Redis TTL, an in-process
// TTL long enough to ride out a short outage (and still under the Redis
// TTL), Redis calls bounded well below the request deadline, and the whole
// catalogue as warm-up keys so that an empty restart refills it at once.
const (
	cacheTTL        = 60 * time.Second
	localTTL        = 30 * time.Second
	redisTimeout    = 100 * time.Millisecond
	breakerFailures = 5
	breakerCooldown = 500 * time.Millisecond
	maxLoads        = 16
	warmKeys        = 1000
	restartCheck    = 250 * time.Millisecond
)

// strategy is one way of serving product reads from a fleet of instances,
// each with its own Redis client.
type strategy interface {
	name() string
	// get serves one request on instance i and says how the cache
	// answered it.
	get(ctx context.Context, i int, id int64) (Product, answer, error)
	// breakersOpen returns how many instances' circuit breakers are not
	// closed now.
	breakersOpen() int
	// redisBack reports whether every instance has used Redis
	// successfully again since t (Redis restarted at t).
	redisBack(t time.Time) bool
	// close stops the instances, then closes their Redis clients.
	close() error
}

// answer is how the cache answered one request: each request's answer is
// counted in the second it ended in, with the request itself, so that the
// per-second counts do not depend on when the sampling loop wakes up.
type answer int

const (
	answerNone  answer = iota // no answer the cache counted: an error, the deadline
	answerMiss                // from the database
	answerHit                 // from Redis
	answerLocal               // from the in-process cache
)

// answerOf is how a cacheaside Get's result counts.
func answerOf(r cacheaside.GetResult) answer {
	switch r {
	case cacheaside.ResultHit:
		return answerHit
	case cacheaside.ResultLocalHit:
		return answerLocal
	case cacheaside.ResultMiss, cacheaside.ResultStale:
		return answerMiss
	}
	return answerNone
}

// newClients returns n Redis clients with go-redis's default options
// except Addr: what most applications run with.
func newClients(addr string, n int) []*redis.Client {
	cs := make([]*redis.Client, n)
	for i := range cs {
		cs[i] = redis.NewClient(&redis.Options{Addr: addr})
	}
	return cs
}

func closeClients(cs []*redis.Client) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// textbook is cache-aside as tutorials write it: GET; on a miss or any
// Redis error, query the database and SET the result with a TTL. Nothing
// coalesces concurrent misses, bounds a Redis call beyond the client's own
// timeouts, or protects the database when Redis is gone.
type textbook struct {
	clients []*redis.Client
	db      database
	lastOK  []atomic.Int64 // per instance: UnixNano of the last GET Redis answered
}

func newTextbook(addr string, n int, db database) *textbook {
	return &textbook{clients: newClients(addr, n), db: db, lastOK: make([]atomic.Int64, n)}
}

func (t *textbook) name() string { return "textbook" }

func (t *textbook) get(ctx context.Context, i int, id int64) (Product, answer, error) {
	rdb := t.clients[i]
	key := textbookPrefix + strconv.FormatInt(id, 10)
	b, err := rdb.Get(ctx, key).Bytes()
	if err == nil || errors.Is(err, redis.Nil) {
		t.lastOK[i].Store(time.Now().UnixNano())
	}
	var p Product
	if err == nil && json.Unmarshal(b, &p) == nil {
		return p, answerHit, nil
	}
	// A miss, or Redis failed: either way, ask the database. The GET
	// counts as a miss whether the database answers or not.
	p, err = t.db.product(ctx, id)
	if err != nil {
		return Product{}, answerMiss, err
	}
	if b, err := json.Marshal(p); err == nil {
		_ = rdb.Set(ctx, key, b, cacheTTL).Err() // the textbook ignores a failed SET
	}
	return p, answerMiss, nil
}

func (t *textbook) breakersOpen() int { return 0 }

func (t *textbook) redisBack(since time.Time) bool {
	for i := range t.lastOK {
		if t.lastOK[i].Load() <= since.UnixNano() {
			return false
		}
	}
	return true
}

func (t *textbook) close() error { return closeClients(t.clients) }

// cacheAside serves reads through one cacheaside.Cache per instance.
type cacheAside struct {
	clients  []*redis.Client
	caches   []*cacheaside.Cache[int64, Product]
	backSeen []bool // per instance: redisBack saw its breaker closed
}

// newCacheAside builds n instances over Redis at addr, loading from db.
// The warm-up list is the top warmKeys keys by popularity: ids 1 to 1000,
// since key popularity falls with the id.
func newCacheAside(addr string, n, keys int, db database) (*cacheAside, error) {
	// Each instance's loader says which instance it is, for the
	// database's record of the outage's queries.
	loader := func(i int) cacheaside.LoadFunc[int64, Product] {
		return func(ctx context.Context, id int64) (Product, error) {
			p, err := db.product(withInstance(ctx, i), id)
			if errors.Is(err, errNoProduct) {
				return p, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
			}
			return p, err
		}
	}
	top := make([]int64, min(warmKeys, keys))
	for i := range top {
		top[i] = int64(i + 1)
	}
	s := &cacheAside{clients: newClients(addr, n), backSeen: make([]bool, n)}
	for i, rdb := range s.clients {
		c, err := cacheaside.New(rdb, loader(i),
			cacheaside.WithPrefix(cacheasidePrefix),
			cacheaside.WithTTL(cacheTTL),
			cacheaside.WithL1(cacheaside.L1{Size: keys, TTL: localTTL, OutageOnly: true, Prefill: true}),
			cacheaside.WithRedisTimeout(redisTimeout),
			cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: breakerFailures, Cooldown: breakerCooldown}),
			cacheaside.WithMaxConcurrentLoads(maxLoads),
			cacheaside.WithWarmup(func(context.Context) ([]int64, error) { return top, nil }),
			cacheaside.WithGetHook(recordAnswer),
			// The demo checks for an empty restart every 250ms (v0.2's
			// default: every second) to show the recovery within its 6s
			// outage; the option stays for one release.
			//lint:ignore SA1019 see above
			cacheaside.WithRestartCheck(restartCheck),
		)
		if err != nil {
			_ = s.close()
			return nil, err
		}
		s.caches = append(s.caches, c)
	}
	return s, nil
}

func (s *cacheAside) name() string { return "cacheaside" }

// answerKey is the context key under which get leaves a *answer for the
// Get hook to fill in.
type answerKey struct{}

func (s *cacheAside) get(ctx context.Context, i int, id int64) (Product, answer, error) {
	var a answer
	p, err := s.caches[i].Get(context.WithValue(ctx, answerKey{}, &a), id)
	return p, a, err
}

// recordAnswer is the caches' Get hook: it tells get how its Get was
// answered (it runs on get's goroutine, before Get returns).
func recordAnswer(ctx context.Context, r cacheaside.GetResult, _ time.Duration) {
	if a, ok := ctx.Value(answerKey{}).(*answer); ok {
		*a = answerOf(r)
	}
}

func (s *cacheAside) breakersOpen() int {
	var n int
	for _, cache := range s.caches {
		if cache.Stats().Breaker != cacheaside.BreakerClosed {
			n++
		}
	}
	return n
}

// redisBack reports whether every instance's circuit breaker has been
// closed at some call since Redis restarted: a breaker that opened during
// the outage closes only after a call to Redis succeeded. Each instance
// on its own, as the textbook's GETs: on a busy machine a breaker whose
// probe missed the Redis timeout opens again for its cooldown, so the
// breakers need not all be closed at one moment when each instance has
// used Redis again. The timeline's goroutine alone calls it, once the
// restarted Redis answered.
func (s *cacheAside) redisBack(time.Time) bool {
	back := true
	for i, c := range s.caches {
		if !s.backSeen[i] {
			s.backSeen[i] = c.Stats().Breaker == cacheaside.BreakerClosed
		}
		back = back && s.backSeen[i]
	}
	return back
}

// stats sums the instances' Stats, for the closing notes.
func (s *cacheAside) stats() cacheaside.Stats {
	var t cacheaside.Stats
	for _, cache := range s.caches {
		st := cache.Stats()
		t.Loads += st.Loads
		t.LoadErrors += st.LoadErrors
		t.RedisErrors += st.RedisErrors
		t.RedisSkipped += st.RedisSkipped
		t.Abandoned += st.Abandoned
		t.BreakerOpens += st.BreakerOpens
		t.Warmed += st.Warmed
		t.WarmUps += st.WarmUps
		t.RestartsDetected += st.RestartsDetected
		t.LockWaits += st.LockWaits
		t.LockWaitTimeouts += st.LockWaitTimeouts
		t.LockAcquired += st.LockAcquired
	}
	return t
}

// close closes every cache first (they wait for their goroutines, some of
// which use the clients), then the clients.
func (s *cacheAside) close() error {
	var errs []error
	for _, c := range s.caches {
		errs = append(errs, c.Close())
	}
	return errors.Join(append(errs, closeClients(s.clients))...)
}

// describeCacheAside is the header line of the cacheaside configuration.
func describeCacheAside(keys int) string {
	return fmt.Sprintf("cacheaside.New per instance: WithTTL(%v), WithL1(L1{Size: %d, TTL: %v, OutageOnly: true, Prefill: true}), WithRedisTimeout(%v), WithCircuitBreaker(CircuitBreaker{Failures: %d, Cooldown: %v}), WithMaxConcurrentLoads(%d), WithWarmupKeys(top %d), WithRestartCheck(%v)",
		cacheTTL, keys, localTTL, redisTimeout, breakerFailures, breakerCooldown, maxLoads, min(warmKeys, keys), restartCheck)
}
