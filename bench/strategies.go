package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside"
	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// Product is the cached value: about 200 bytes of JSON.
type Product struct {
	ID          int64    `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	PriceCents  int64    `json:"price_cents"`
	Tags        []string `json:"tags"`
}

func newProduct(id int64) Product {
	return Product{
		ID:          id,
		Name:        "product " + strconv.FormatInt(id, 10),
		Description: "a sturdy, well-made product that ships in two days, from our own warehouse",
		PriceCents:  1000 + id%9000,
		Tags:        []string{"kitchen", "steel", "bestseller", "gift"},
	}
}

// database is the loader every strategy reads through: it counts calls
// and takes delay per call, like a query. With conns set, a call first
// takes one of its slots, like a query waiting for a connection of a pool
// of that size.
type database struct {
	calls     atomic.Int64
	cancelled atomic.Int64  // calls that returned their context's error
	delay     atomic.Int64  // time.Duration
	conns     chan struct{} // nil: unlimited connections
	starts    *windows      // nil: calls are not counted per window
}

func (db *database) load(ctx context.Context, id int64) (Product, error) {
	db.calls.Add(1)
	if db.starts != nil {
		db.starts.add(time.Now())
	}
	if db.conns != nil {
		select {
		case db.conns <- struct{}{}:
			defer func() { <-db.conns }()
		case <-ctx.Done():
			db.cancelled.Add(1)
			return Product{}, ctx.Err()
		}
	}
	if d := time.Duration(db.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			db.cancelled.Add(1)
			return Product{}, ctx.Err()
		}
	}
	return newProduct(id), nil
}

// The configuration of cacheaside in every measurement: the one the brief
// asks for in the outage cases, used everywhere so that one deployment is
// measured throughout.
const (
	cacheTTL        = time.Hour
	redisTimeout    = 50 * time.Millisecond
	breakerFailures = 5
	breakerCooldown = 500 * time.Millisecond
	localSize       = 1000
	localTTL        = 5 * time.Second
)

// strategy is one way of reading products through Redis.
type strategy interface {
	get(ctx context.Context, id int64) (Product, error)
	// warm makes ids hits.
	warm(ctx context.Context, ids []int64) error
	// notes says what the strategy's own counters saw, or "".
	notes() string
	close() error
}

// kind builds a strategy over a client (not owned), a database and a key
// prefix.
type kind struct {
	name string
	open func(rdb *redis.Client, db *database, prefix string) (strategy, error)
}

const (
	nameRaw            = "raw GET+json (baseline)"
	nameCacheaside     = "cacheaside"
	nameCacheasideNoL1 = "cacheaside (no L1)"
	nameTextbook       = "textbook"
	nameGoCache        = "go-redis/cache"
	nameGoCacheLFU     = "go-redis/cache+TinyLFU(1000,5s)"
)

// kinds are the strategies, the baseline first.
var kinds = []kind{
	{nameRaw, func(rdb *redis.Client, _ *database, p string) (strategy, error) {
		return &raw{rdb: rdb, prefix: p}, nil
	}},
	{nameCacheaside, func(rdb *redis.Client, db *database, p string) (strategy, error) {
		return openCacheaside(rdb, db, p, true)
	}},
	{nameTextbook, func(rdb *redis.Client, db *database, p string) (strategy, error) {
		return &textbook{raw: raw{rdb: rdb, prefix: p}, db: db}, nil
	}},
	{nameGoCache, func(rdb *redis.Client, db *database, p string) (strategy, error) {
		return openGoCache(rdb, db, p, nil), nil
	}},
	{nameGoCacheLFU, func(rdb *redis.Client, db *database, p string) (strategy, error) {
		return openGoCache(rdb, db, p, gocache.NewTinyLFU(localSize, localTTL)), nil
	}},
}

// hitKinds are kinds plus, on the hit path only, cacheaside without its
// in-process cache, to show what WithLocalCache costs there.
func hitKinds() []kind {
	noL1 := kind{nameCacheasideNoL1, func(rdb *redis.Client, db *database, p string) (strategy, error) {
		return openCacheaside(rdb, db, p, false)
	}}
	return append(slices.Clone(kinds[:2]), append([]kind{noL1}, kinds[2:]...)...)
}

// errMiss is the raw baseline's answer for a key Redis does not hold.
var errMiss = errors.New("bench: raw GET missed")

// raw is the baseline: GET and json.Unmarshal, nothing else.
type raw struct {
	rdb    redis.UniversalClient
	prefix string
}

func (r *raw) key(id int64) string { return r.prefix + strconv.FormatInt(id, 10) }

func (r *raw) get(ctx context.Context, id int64) (Product, error) {
	var p Product
	b, err := r.rdb.Get(ctx, r.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return p, errMiss
	}
	if err != nil {
		return p, err
	}
	err = json.Unmarshal(b, &p)
	return p, err
}

// warm writes the values with one pipeline.
func (r *raw) warm(ctx context.Context, ids []int64) error {
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			b, err := json.Marshal(newProduct(id))
			if err != nil {
				return err
			}
			p.Set(ctx, r.key(id), b, cacheTTL)
		}
		return nil
	})
	return err
}

func (r *raw) notes() string { return "" }
func (r *raw) close() error  { return nil }

// textbook is cache-aside as tutorials write it, on go-redis defaults: GET;
// on a miss or any Redis error, load and SET (a failed SET is ignored).
// Nothing coalesces concurrent misses or bounds a Redis call beyond the
// client's own timeouts.
type textbook struct {
	raw
	db *database
}

func (t *textbook) get(ctx context.Context, id int64) (Product, error) {
	if p, err := t.raw.get(ctx, id); err == nil {
		return p, nil
	}
	p, err := t.db.load(ctx, id)
	if err != nil {
		return p, err
	}
	if b, err := json.Marshal(p); err == nil {
		_ = t.rdb.Set(ctx, t.key(id), b, cacheTTL).Err()
	}
	return p, nil
}

func (t *textbook) warm(ctx context.Context, ids []int64) error { return warmByGet(ctx, t, ids) }

// ca is cacheaside.
type ca struct {
	c *cacheaside.Cache[int64, Product]
}

func openCacheaside(rdb redis.UniversalClient, db *database, p string, l1 bool) (strategy, error) {
	opts := []cacheaside.Option{
		cacheaside.WithTTL(cacheTTL), cacheaside.WithPrefix(p),
		cacheaside.WithRedisTimeout(redisTimeout),
		cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: breakerFailures, Cooldown: breakerCooldown}),
	}
	if l1 {
		opts = append(opts, cacheaside.WithL1(cacheaside.L1{Size: localSize, TTL: localTTL, OutageOnly: true}))
	}
	c, err := cacheaside.New(rdb, db.load, opts...)
	if err != nil {
		return nil, err
	}
	return &ca{c: c}, nil
}

func (c *ca) get(ctx context.Context, id int64) (Product, error) { return c.c.Get(ctx, id) }
func (c *ca) warm(ctx context.Context, ids []int64) error        { return warmByGet(ctx, c, ids) }
func (c *ca) close() error                                       { return c.c.Close() }

func (c *ca) notes() string {
	s := c.c.Stats()
	return fmt.Sprintf("Redis errors %d, skipped %d, abandoned %d, breaker opened %d×, L1 hits %d",
		s.RedisErrors, s.RedisSkipped, s.Abandoned, s.BreakerOpens, s.LocalHits)
}

// redisErrors counts the Redis calls that failed, ran past the Redis
// timeout or were skipped: each may have made a Get load (fail open).
// redisErrors counts the Redis calls that failed or ran past the budget:
// either can cost a fill (a fill cut at the budget by its deadline is not
// written), and so a later load, on a machine busy enough to slow Redis
// calls (seen: 21-38 loads on the ContextTimeoutEnabled client with two
// test suites at once, every one after slow calls).
func (c *ca) redisErrors() int64 {
	s := c.c.Stats()
	return int64(s.RedisErrors + s.RedisSlow)
}

// goCache is github.com/go-redis/cache/v9 used through Once, its
// cache-aside call, with JSON as the codec so that every strategy stores
// and decodes the same bytes (its default is msgpack with s2).
type goCache struct {
	c      *gocache.Cache
	db     *database
	prefix string
}

func openGoCache(rdb *redis.Client, db *database, p string, local gocache.LocalCache) *goCache {
	opts := &gocache.Options{Redis: rdb, Marshal: json.Marshal, Unmarshal: json.Unmarshal}
	if local != nil {
		opts.LocalCache = local
	}
	return &goCache{c: gocache.New(opts), db: db, prefix: p}
}

func (g *goCache) get(ctx context.Context, id int64) (Product, error) {
	var p Product
	err := g.c.Once(&gocache.Item{
		Ctx:   ctx,
		Key:   g.prefix + strconv.FormatInt(id, 10),
		Value: &p,
		TTL:   cacheTTL,
		Do: func(it *gocache.Item) (any, error) {
			return g.db.load(it.Context(), id)
		},
	})
	return p, err
}

func (g *goCache) warm(ctx context.Context, ids []int64) error { return warmByGet(ctx, g, ids) }
func (g *goCache) notes() string                               { return "" }
func (g *goCache) close() error                                { return nil }

// warmByGet reads every id through s, 16 at a time, and checks the values.
func warmByGet(ctx context.Context, s strategy, ids []int64) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, id := range ids {
		g.Go(func() error {
			p, err := s.get(ctx, id)
			if err == nil && p.ID != id {
				err = fmt.Errorf("got product %d", p.ID)
			}
			if err != nil {
				return fmt.Errorf("warm %d: %w", id, err)
			}
			return nil
		})
	}
	return g.Wait()
}
