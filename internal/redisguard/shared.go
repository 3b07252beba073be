package redisguard

import (
	"reflect"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Caches built on one client share one Guard when they ask for the same
// settings (Acquire): one set of breakers per node, which learns of an
// outage once for all of them, one bound on abandoned calls, one dial hook
// on the client. The settings that must match are those of shareKey:
// Budget, Limit, BreakerFailures, BreakerCooldown, MaxAbandoned, Inline,
// Clone and PoolSize, and the client itself (Dials, the client the caller
// was given, by identity). Caches that differ in any of them get guards of
// their own. Each sharer subscribes to the Guard's breaker changes
// (Subscribe); the last release closes the Guard.

// shareKey identifies a shared Guard: the client the caller was given and
// every setting that changes how the Guard behaves.
type shareKey struct {
	client        redis.UniversalClient
	budget, limit time.Duration
	failures      uint32
	cooldown      time.Duration
	maxAbandoned  int
	inline, clone bool
	pool          int
}

// shared is one registered Guard and how many sharers hold it.
type shared struct {
	g    *Guard
	refs int
}

// registry holds the shared Guards.
var registry = struct {
	sync.Mutex
	guards map[shareKey]*shared
}{guards: map[shareKey]*shared{}}

// Acquire returns the Guard for cfg that every caller with the same client
// (cfg.Dials, or cfg.Client when Dials is nil) and the same settings
// shares, building it on first use, and the function that releases it: the
// last release closes the Guard (waiting for its abandoned calls) and
// forgets it. release is safe to call more than once. cfg.OnChange is
// ignored: a sharer learns of breaker changes through Subscribe. The
// Guard's Client is the one its first caller gave (with Clone, that
// caller's clone of Dials); every sharer must send its calls through
// Guard.Client. A client that is not a pointer cannot be told apart from
// another: it gets a Guard of its own.
func Acquire(cfg Config) (g *Guard, release func()) {
	cfg.OnChange = nil
	dials := cfg.Dials
	if dials == nil {
		dials = cfg.Client
	}
	if dials == nil || reflect.TypeOf(dials).Kind() != reflect.Pointer {
		g := New(cfg)
		return g, sync.OnceFunc(g.Close)
	}
	key := shareKey{
		client: dials, budget: cfg.Budget, limit: cfg.Limit,
		failures: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown,
		maxAbandoned: cfg.MaxAbandoned, inline: cfg.Inline, clone: cfg.Clone, pool: cfg.PoolSize,
	}
	registry.Lock()
	defer registry.Unlock()
	s := registry.guards[key]
	if s == nil {
		s = &shared{g: New(cfg)}
		registry.guards[key] = s
	}
	s.refs++
	return s.g, sync.OnceFunc(func() { releaseShared(key, s) })
}

// releaseShared drops one reference to s; the last one forgets s and
// closes its Guard (outside the registry's lock: Close waits for abandoned
// calls, and other clients' Caches must not wait for them).
func releaseShared(key shareKey, s *shared) {
	registry.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(registry.guards, key)
	}
	registry.Unlock()
	if last {
		s.g.Close()
	}
}

// Client is the client every call of the Guard goes through
// (Config.Client): the one to send through when the Guard is shared.
func (g *Guard) Client() redis.UniversalClient { return g.rdb }

// subscriber is one function that Subscribe registered.
type subscriber struct {
	fn func(node string, from, to State)
}

// Subscribe adds fn to the functions that run on every breaker state
// change, under that breaker's lock (fn must not call the Guard), and
// returns the function that removes it (safe to call more than once). A
// panic in fn is recovered, and the other subscribers still run: fn
// should recover and report its own panics.
func (g *Guard) Subscribe(fn func(node string, from, to State)) (unsubscribe func()) {
	s := &subscriber{fn: fn}
	g.subsMu.Lock()
	g.subs = append(append([]*subscriber(nil), g.subs...), s)
	g.subsMu.Unlock()
	return sync.OnceFunc(func() {
		g.subsMu.Lock()
		defer g.subsMu.Unlock()
		kept := make([]*subscriber, 0, len(g.subs))
		for _, o := range g.subs {
			if o != s {
				kept = append(kept, o)
			}
		}
		g.subs = kept
	})
}

// notify runs every subscriber on a breaker change, each past a panic in
// the ones before it.
func (g *Guard) notify(node string, from, to State) {
	g.subsMu.Lock()
	subs := g.subs
	g.subsMu.Unlock()
	for _, s := range subs {
		notifyOne(s.fn, node, from, to)
	}
}

// notifyOne runs one subscriber and recovers a panic in it: a breaker
// change happens inside some call, which must not crash, and the other
// subscribers must still hear of it.
func notifyOne(fn func(node string, from, to State), node string, from, to State) {
	defer func() { _ = recover() }()
	fn(node, from, to)
}
