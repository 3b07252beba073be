package cacheaside

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// optionNames are the names an error from resolve may use to point at an
// option. Tests use them to check that an error names exactly what is wrong.
var optionNames = []string{
	"WithTTL", "WithJitter", "WithNegativeTTL", "WithPrefix", "WithFillLock",
	"WithLoadTimeout", "WithRedisTimeout", "WithMaxRefills",
	"WithCodec", "WithKeyFunc",
}

// resolveWith applies opts to the default config and resolves it, as New
// does.
func resolveWith(opts ...Option) (config, error) {
	c := defaultConfig()
	for _, opt := range opts {
		opt(&c)
	}
	err := c.resolve()
	return c, err
}

// ptrCodec is a Codec implemented on a pointer, so that a typed nil
// (*ptrCodec)(nil) is a non-nil Codec interface holding a nil pointer.
type ptrCodec struct{}

func (*ptrCodec) Marshal(any) ([]byte, error) { return nil, nil }
func (*ptrCodec) Unmarshal([]byte, any) error { return nil }

func TestResolveDefaults(t *testing.T) {
	c, err := resolveWith()
	if err != nil {
		t.Fatalf("resolve() = %v, want nil", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ttl", c.ttl, 10 * time.Minute},
		{"jitter", c.jitter, 0.1},
		{"negativeTTL", c.negativeTTL, 30 * time.Second},
		{"prefix", c.prefix, "ca:"},
		{"lockTTL", c.lockTTL, 3 * time.Second},
		{"loadTimeout", c.loadTimeout, 30 * time.Second},
		{"lockWait", c.lockWait, time.Duration(-1)}, // no bound
		{"maxLoads", c.maxLoads, 16},
		{"redisTimeout", c.redisTTL, 100 * time.Millisecond},
		{"maxRefills", c.maxRefills, 2},
		{"codec", c.codec, Codec(JSON{})},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("resolve().%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.keyFunc != nil {
		t.Errorf("resolve().keyFunc = %T, want nil", c.keyFunc)
	}
	if c.logger != nil {
		t.Errorf("resolve().logger = %v, want nil", c.logger)
	}
}

func TestResolveRejectsInvalidOption(t *testing.T) {
	tests := []struct {
		name string
		opt  []Option
		want string // the option the error must name
	}{
		{"TTL zero", []Option{WithTTL(0)}, "WithTTL"},
		{"TTL negative", []Option{WithTTL(-time.Second)}, "WithTTL"},
		{"TTL 999µs", []Option{WithTTL(999 * time.Microsecond)}, "WithTTL"},
		{"jitter negative", []Option{WithJitter(-0.1)}, "WithJitter"},
		{"jitter one", []Option{WithJitter(1)}, "WithJitter"},
		{"jitter above one", []Option{WithJitter(1.5)}, "WithJitter"},
		{"jitter NaN", []Option{WithJitter(math.NaN())}, "WithJitter"},
		{"jitter +Inf", []Option{WithJitter(math.Inf(1))}, "WithJitter"},
		{"jitter -Inf", []Option{WithJitter(math.Inf(-1))}, "WithJitter"},
		{"negative TTL negative", []Option{WithNegativeTTL(-time.Second)}, "WithNegativeTTL"},
		{"negative TTL under 1ms", []Option{WithNegativeTTL(500 * time.Microsecond)}, "WithNegativeTTL"},
		{"prefix with {", []Option{WithPrefix("ca{")}, "WithPrefix"},
		{"prefix with }", []Option{WithPrefix("}")}, "WithPrefix"},
		{"prefix with tag", []Option{WithPrefix("{x}:")}, "WithPrefix"},
		{"lock TTL zero", []Option{WithLockTTL(0)}, "WithFillLock"},
		{"lock TTL negative", []Option{WithLockTTL(-time.Second)}, "WithFillLock"},
		{"lock TTL 999µs", []Option{WithLockTTL(999 * time.Microsecond)}, "WithFillLock"},
		{"load timeout zero", []Option{WithLoadTimeout(0)}, "WithLoadTimeout"},
		{"load timeout negative", []Option{WithLoadTimeout(-time.Second)}, "WithLoadTimeout"},
		{"max concurrent loads negative", []Option{WithMaxConcurrentLoads(-1)}, "WithMaxConcurrentLoads"},
		{"Redis timeout zero", []Option{WithRedisTimeout(0)}, "WithRedisTimeout"},
		{"Redis timeout negative", []Option{WithRedisTimeout(-time.Millisecond)}, "WithRedisTimeout"},
		{"max refills negative", []Option{WithMaxRefills(-1)}, "WithMaxRefills"},
		{"codec nil", []Option{WithCodec(nil)}, "WithCodec"},
		{"codec typed nil pointer", []Option{WithCodec((*ptrCodec)(nil))}, "WithCodec"},
		// A count the breaker cannot hold (it counts in uint32) must not
		// wrap around to a breaker that opens on the first failure.
		{"breaker failures 1<<32", []Option{WithBreaker(1<<32, time.Second)}, "WithCircuitBreaker"},
		{"breaker failures above uint32", []Option{WithBreaker(math.MaxUint32+5, time.Second)}, "WithCircuitBreaker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolveWith(tt.opt...)
			if err == nil {
				t.Fatalf("resolve(%s) = nil, want an error naming %s", tt.name, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("resolve(%s) = %q, want an error naming %s", tt.name, err, tt.want)
			}
		})
	}
}

func TestResolveAcceptsValidOption(t *testing.T) {
	tests := []struct {
		name string
		opt  []Option
	}{
		{"no options", nil},
		{"TTL 1ms", []Option{WithTTL(time.Millisecond)}},
		{"TTL a day", []Option{WithTTL(24 * time.Hour)}},
		{"jitter zero", []Option{WithJitter(0)}},
		{"jitter negative zero", []Option{WithJitter(math.Copysign(0, -1))}},
		{"jitter just under one", []Option{WithJitter(0.999)}},
		{"negative TTL zero (disabled)", []Option{WithNegativeTTL(0)}},
		{"negative TTL 1ms", []Option{WithNegativeTTL(time.Millisecond)}},
		{"prefix empty", []Option{WithPrefix("")}},
		{"prefix with colons and unicode", []Option{WithPrefix("app:v2:ключ:")}},
		{"lock TTL 1ms", []Option{WithLockTTL(time.Millisecond)}},
		{"lock wait zero", []Option{WithLockWait(0)}},
		{"lock wait negative (no bound)", []Option{WithLockWait(-time.Millisecond)}},
		{"lock wait shorter than lock TTL", []Option{WithLockTTL(10 * time.Second), WithLockWait(100 * time.Millisecond)}},
		{"lock wait longer than lock TTL", []Option{WithLockTTL(time.Second), WithLockWait(time.Minute)}},
		{"load timeout 1ms", []Option{WithLoadTimeout(time.Millisecond)}},
		{"load timeout just under lock TTL", []Option{WithLockTTL(time.Second), WithLoadTimeout(time.Second - time.Nanosecond)}},
		{"load timeout equals lock TTL", []Option{WithLockTTL(time.Second), WithLoadTimeout(time.Second)}},
		{"load timeout far over lock TTL", []Option{WithLockTTL(time.Millisecond), WithLoadTimeout(time.Hour)}},
		{"max concurrent loads zero (no bound)", []Option{WithMaxConcurrentLoads(0)}},
		{"max refills zero", []Option{WithMaxRefills(0)}},
		{"codec pointer", []Option{WithCodec(&ptrCodec{})}},
		{"logger nil", []Option{WithLogger(nil)}},
		{"key func", []Option{WithKeyFunc(func(int) string { return "" })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := resolveWith(tt.opt...); err != nil {
				t.Errorf("resolve(%s) = %v, want nil", tt.name, err)
			}
		})
	}
}

func TestResolveNamesEveryBadOption(t *testing.T) {
	_, err := resolveWith(
		WithTTL(0),
		WithJitter(math.NaN()),
		WithNegativeTTL(-1),
		WithPrefix("{"),
		WithLoadTimeout(0),
		WithRedisTimeout(0),
		WithMaxRefills(-1),
		WithCodec(nil),
	)
	if err == nil {
		t.Fatal("resolve(nine bad options) = nil, want one error naming all of them")
	}
	for _, name := range []string{
		"WithTTL", "WithJitter", "WithNegativeTTL", "WithPrefix", "WithLoadTimeout",
		"WithRedisTimeout", "WithMaxRefills", "WithCodec",
	} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("resolve(nine bad options) = %q, want it to name %s", err, name)
		}
	}
}

// The lock TTL and the load timeout are validated in one switch; a bad
// value of one must not hide a bad value of the other.
func TestResolveNamesBadLockTTLAndBadLoadTimeoutTogether(t *testing.T) {
	tests := []struct {
		name string
		opt  []Option
	}{
		{"lock TTL 0, load timeout 0", []Option{WithLockTTL(0), WithLoadTimeout(0)}},
		{"lock TTL -1s, load timeout -1s", []Option{WithLockTTL(-time.Second), WithLoadTimeout(-time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolveWith(tt.opt...)
			if err == nil {
				t.Fatalf("resolve(%s) = nil, want an error naming WithFillLock and WithLoadTimeout", tt.name)
			}
			for _, name := range []string{"WithFillLock", "WithLoadTimeout"} {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("resolve(%s) = %q, want it to name %s too (every bad option must be reported)", tt.name, err, name)
				}
			}
		})
	}
}

func TestResolveErrorNamesOnlyTheBadOption(t *testing.T) {
	// One bad option at a time: the error must not blame the others.
	tests := []struct {
		opt  Option
		want string
	}{
		{WithTTL(0), "WithTTL"},
		{WithJitter(2), "WithJitter"},
		{WithNegativeTTL(-1), "WithNegativeTTL"},
		{WithPrefix("}"), "WithPrefix"},
		{WithLockTTL(0), "WithFillLock"},
		{WithLoadTimeout(0), "WithLoadTimeout"},
		{WithRedisTimeout(0), "WithRedisTimeout"},
		{WithMaxRefills(-1), "WithMaxRefills"},
		{WithCodec(nil), "WithCodec"},
	}
	for _, tt := range tests {
		_, err := resolveWith(tt.opt)
		if err == nil {
			t.Errorf("resolve(%s) = nil, want an error", tt.want)
			continue
		}
		for _, other := range optionNames {
			if other != tt.want && strings.Contains(err.Error(), other) {
				t.Errorf("resolve(%s) = %q, want it not to name %s", tt.want, err, other)
			}
		}
	}
}

// The lock TTL, the load timeout and the lock wait are independent: the
// holder's heartbeat keeps its lock alive however long its load runs, so
// none is derived from another.
func TestResolveLockDurations(t *testing.T) {
	tests := []struct {
		name                           string
		opt                            []Option
		lockTTL, loadTimeout, lockWait time.Duration
	}{
		{"defaults", nil, 3 * time.Second, 30 * time.Second, -1},
		{"only lock TTL", []Option{WithLockTTL(5 * time.Second)}, 5 * time.Second, 30 * time.Second, -1},
		{"only load timeout", []Option{WithLoadTimeout(4 * time.Second)}, 3 * time.Second, 4 * time.Second, -1},
		{"only lock wait", []Option{WithLockWait(time.Second)}, 3 * time.Second, 30 * time.Second, time.Second},
		{"load timeout over lock TTL", []Option{WithLockTTL(time.Second), WithLoadTimeout(time.Minute)}, time.Second, time.Minute, -1},
		{"zero wait", []Option{WithLockWait(0)}, 3 * time.Second, 30 * time.Second, 0},
		{"all three", []Option{WithLockWait(time.Minute), WithLoadTimeout(time.Second), WithLockTTL(2 * time.Second)}, 2 * time.Second, time.Second, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolveWith(tt.opt...)
			if err != nil {
				t.Fatalf("resolve(%s) = %v, want nil", tt.name, err)
			}
			if c.lockTTL != tt.lockTTL {
				t.Errorf("resolve(%s).lockTTL = %v, want %v", tt.name, c.lockTTL, tt.lockTTL)
			}
			if c.loadTimeout != tt.loadTimeout {
				t.Errorf("resolve(%s).loadTimeout = %v, want %v", tt.name, c.loadTimeout, tt.loadTimeout)
			}
			if c.lockWait != tt.lockWait {
				t.Errorf("resolve(%s).lockWait = %v, want %v", tt.name, c.lockWait, tt.lockWait)
			}
		})
	}
}

func TestResolveLastOptionWins(t *testing.T) {
	tests := []struct {
		name string
		opt  []Option
		get  func(config) any
		want any
	}{
		{"TTL", []Option{WithTTL(time.Minute), WithTTL(2 * time.Minute)}, func(c config) any { return c.ttl }, 2 * time.Minute},
		{"bad TTL then good", []Option{WithTTL(0), WithTTL(time.Second)}, func(c config) any { return c.ttl }, time.Second},
		{"jitter", []Option{WithJitter(0.5), WithJitter(0)}, func(c config) any { return c.jitter }, 0.0},
		{"bad jitter then good", []Option{WithJitter(math.NaN()), WithJitter(0.2)}, func(c config) any { return c.jitter }, 0.2},
		{"prefix", []Option{WithPrefix("a:"), WithPrefix("")}, func(c config) any { return c.prefix }, ""},
		{"bad prefix then good", []Option{WithPrefix("{"), WithPrefix("b:")}, func(c config) any { return c.prefix }, "b:"},
		{"negative TTL", []Option{WithNegativeTTL(time.Second), WithNegativeTTL(0)}, func(c config) any { return c.negativeTTL }, time.Duration(0)},
		{"lock TTL", []Option{WithLockTTL(time.Second), WithLockTTL(4 * time.Second)}, func(c config) any { return c.lockTTL }, 4 * time.Second},
		{"lock wait", []Option{WithLockWait(-1), WithLockWait(time.Second)}, func(c config) any { return c.lockWait }, time.Second},
		{"max concurrent loads", []Option{WithMaxConcurrentLoads(-1), WithMaxConcurrentLoads(0)}, func(c config) any { return c.maxLoads }, 0},
		{"load timeout", []Option{WithLoadTimeout(0), WithLoadTimeout(time.Second)}, func(c config) any { return c.loadTimeout }, time.Second},
		{"Redis timeout", []Option{WithRedisTimeout(0), WithRedisTimeout(time.Second)}, func(c config) any { return c.redisTTL }, time.Second},
		{"max refills", []Option{WithMaxRefills(-1), WithMaxRefills(5)}, func(c config) any { return c.maxRefills }, 5},
		{"codec", []Option{WithCodec(nil), WithCodec(JSON{})}, func(c config) any { return c.codec }, Codec(JSON{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolveWith(tt.opt...)
			if err != nil {
				t.Fatalf("resolve(%s) = %v, want nil: the last option wins", tt.name, err)
			}
			if got := tt.get(c); got != tt.want {
				t.Errorf("resolve(%s) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

// A nil WithKeyFunc followed by a real one must let the last one win, like
// every other option.
func TestResolveKeyFuncLastOptionWins(t *testing.T) {
	f := func(int) string { return "" }
	c, err := resolveWith(WithKeyFunc[int](nil), WithKeyFunc(f))
	if err != nil {
		t.Errorf("resolve(WithKeyFunc(nil), WithKeyFunc(f)) = %v, want nil: the last option wins", err)
	}
	if _, ok := c.keyFunc.(func(int) string); !ok {
		t.Errorf("resolve(WithKeyFunc(nil), WithKeyFunc(f)).keyFunc = %T, want func(int) string", c.keyFunc)
	}
}

// newTestClient returns a client for an address where nothing listens: New
// must not do I/O, so it is enough to construct a Cache.
func newTestClient(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

type structKey struct {
	Tenant string
	ID     int64
}

func loadString[K comparable](context.Context, K) (string, error) { return "", nil }

func TestNewRejectsMissingCollaborators(t *testing.T) {
	rdb := newTestClient(t)
	tests := []struct {
		name string
		new  func() (any, error)
		want string
	}{
		{"nil client", func() (any, error) { return New[string, string](nil, loadString[string]) }, "Redis client"},
		{"nil loader", func() (any, error) { return New[string, string](rdb, nil) }, "LoadFunc"},
		{"struct key without WithKeyFunc", func() (any, error) { return New[structKey, string](rdb, loadString[structKey]) }, "WithKeyFunc"},
		{"float key without WithKeyFunc", func() (any, error) { return New[float64, string](rdb, loadString[float64]) }, "WithKeyFunc"},
		{"nil WithKeyFunc", func() (any, error) { return New[int, string](rdb, loadString[int], WithKeyFunc[int](nil)) }, "WithKeyFunc"},
		{"WithKeyFunc of the wrong key type", func() (any, error) {
			return New[int64, string](rdb, loadString[int64], WithKeyFunc(func(int) string { return "" }))
		}, "WithKeyFunc"},
		{"WithKeyFunc of the underlying type of a named key", func() (any, error) {
			type productID int64
			return New[productID, string](rdb, loadString[productID], WithKeyFunc(func(int64) string { return "" }))
		}, "WithKeyFunc"},
		{"bad option", func() (any, error) { return New[string, string](rdb, loadString[string], WithTTL(0)) }, "WithTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.new()
			if err == nil {
				t.Fatalf("New(%s) = %v, nil, want an error naming %q", tt.name, c, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%s) error = %q, want it to name %q", tt.name, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "cacheaside: ") {
				t.Errorf("New(%s) error = %q, want the prefix %q", tt.name, err, "cacheaside: ")
			}
		})
	}
}

func TestNewReportsEveryProblemInOneError(t *testing.T) {
	c, err := New[structKey, string](nil, nil, WithTTL(0), WithJitter(-1), WithPrefix("{"), WithMaxRefills(-1))
	if err == nil {
		t.Fatalf("New(nil, nil, struct key, bad options) = %v, nil, want an error", c)
	}
	if c != nil {
		t.Errorf("New(nil, nil, struct key, bad options) = %v, want a nil *Cache with the error", c)
	}
	for _, want := range []string{"Redis client", "LoadFunc", "WithKeyFunc", "WithTTL", "WithJitter", "WithPrefix", "WithMaxRefills"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(nil, nil, struct key, bad options) error = %q, want it to mention %q", err, want)
		}
	}
}

func TestNewWrongKeyFuncAndOtherProblemsTogether(t *testing.T) {
	rdb := newTestClient(t)
	_, err := New[int64, string](rdb, nil, WithKeyFunc(func(string) string { return "" }), WithRedisTimeout(0))
	if err == nil {
		t.Fatal("New(wrong WithKeyFunc, nil loader, WithRedisTimeout(0)) = nil error, want one error naming all three")
	}
	for _, want := range []string{"WithKeyFunc", "LoadFunc", "WithRedisTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(wrong WithKeyFunc, nil loader, WithRedisTimeout(0)) error = %q, want it to mention %q", err, want)
		}
	}
}

// A nil *redis.Client passed as a redis.UniversalClient is a non-nil
// interface holding a nil pointer; every Redis call on it would panic.
// New already catches the same mistake for a Codec (WithCodec of a typed nil
// pointer), so it should catch it for the client too.
func TestNewTypedNilClient(t *testing.T) {
	var rdb *redis.Client
	c, err := New[string, string](rdb, loadString[string])
	if err == nil {
		c.Close()
		t.Fatalf("New((*redis.Client)(nil), load) error = nil, want an error naming the Redis client")
	}
	if !strings.Contains(err.Error(), "Redis client") {
		t.Errorf("New((*redis.Client)(nil), load) error = %q, want it to name the Redis client", err)
	}
}

func TestNewValid(t *testing.T) {
	rdb := newTestClient(t)
	tests := []struct {
		name string
		new  func() (interface{ Close() error }, error)
	}{
		{"string key, defaults", func() (interface{ Close() error }, error) {
			return New[string, string](rdb, loadString[string])
		}},
		{"struct key with WithKeyFunc", func() (interface{ Close() error }, error) {
			return New[structKey, string](rdb, loadString[structKey], WithKeyFunc(func(k structKey) string { return k.Tenant }))
		}},
		{"nil option skipped", func() (interface{ Close() error }, error) {
			return New[int64, string](rdb, loadString[int64], nil, WithJitter(0))
		}},
		{"cluster client", func() (interface{ Close() error }, error) {
			cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
			t.Cleanup(func() { cc.Close() })
			return New[string, string](cc, loadString[string])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.new()
			if err != nil {
				t.Fatalf("New(%s) = %v, want nil", tt.name, err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("second Close() = %v, want nil", err)
			}
		})
	}
}

// TestOptionSetIsSmall: at most 19 With... are not deprecated, each lives
// in options.go and its doc says its default; the deprecated ones live in
// deprecated.go and say what to use instead.
func TestOptionSetIsSmall(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var current []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "With") {
				continue
			}
			doc := fn.Doc.Text()
			if strings.Contains(doc, "\nDeprecated: ") {
				if name != "deprecated.go" {
					t.Errorf("%s: deprecated %s, want it in deprecated.go", name, fn.Name.Name)
				}
				continue
			}
			current = append(current, fn.Name.Name)
			if name != "options.go" {
				t.Errorf("%s: %s, want it in options.go", name, fn.Name.Name)
			}
			if !strings.Contains(doc, "Default: ") {
				t.Errorf("%s: doc has no \"Default: \"", fn.Name.Name)
			}
		}
	}
	// 18 for the reshaped set, plus WithReplicaAcks, a write
	// confirmation the consistency work names (issue 15),
	// WithSyncInvalidation, which issue 15 item 3 names, and WithAudit,
	// the consistency auditor issue 16 names explicitly.
	const maxOptions = 21
	if len(current) > maxOptions {
		t.Errorf("%d options not deprecated, want at most %d: %v", len(current), maxOptions, current)
	}
	t.Logf("%d options: %v", len(current), current)
}

func TestGroupedOptionsZeroMeansDefault(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		get  func(config) any
		want any
	}{
		{"fill lock zero", []Option{WithFillLock(FillLock{})}, func(c config) any { return [2]time.Duration{c.lockTTL, c.lockWait} }, [2]time.Duration{defaultLockTTL, noLimit}},
		{"fill lock set", []Option{WithFillLock(FillLock{TTL: time.Second, Wait: 2 * time.Second})}, func(c config) any { return [2]time.Duration{c.lockTTL, c.lockWait} }, [2]time.Duration{time.Second, 2 * time.Second}},
		{"fill lock negative wait", []Option{WithFillLock(FillLock{Wait: -time.Second})}, func(c config) any { return c.lockWait }, noLimit},
		{"breaker zero", []Option{WithCircuitBreaker(CircuitBreaker{})}, func(c config) any { return fmt.Sprint(c.breakerFailures, c.breakerCooldown) }, fmt.Sprint(defaultBreakerFailures, defaultBreakerCooldown)},
		{"breaker off", []Option{WithCircuitBreaker(CircuitBreaker{Failures: -1})}, func(c config) any { return c.breakerFailures }, 0},
		{"breaker hook", []Option{WithCircuitBreaker(CircuitBreaker{OnChange: func(BreakerChange) {}})}, func(c config) any { return c.breakerHook != nil }, true},
		{"l1 zero", []Option{WithL1(L1{})}, func(c config) any { return fmt.Sprint(c.localSize, c.localTTL, c.localFirst, c.localPrefill) }, fmt.Sprint(defaultL1Size, defaultL1TTL, true, false)},
		{"l1 outage only", []Option{WithL1(L1{Size: 5, TTL: time.Second, OutageOnly: true})}, func(c config) any { return fmt.Sprint(c.localSize, c.localTTL, c.localFirst) }, fmt.Sprint(5, time.Second, false)},
		{"stale", []Option{WithServeStale(ServeStale{MaxStale: time.Hour, SoftTimeout: time.Second})}, func(c config) any { return [2]time.Duration{c.maxStale, c.softTimeout} }, [2]time.Duration{time.Hour, time.Second}},
		// v0.1 wrappers keep their meaning, in either order.
		{"v0.1 local cache is outage-only", []Option{WithLocalCache(5, time.Second)}, func(c config) any { return c.localFirst }, false},
		{"v0.1 local first after", []Option{WithLocalCache(5, time.Second), WithLocalFirst(true)}, func(c config) any { return c.localFirst }, true},
		{"v0.1 local first before", []Option{WithLocalFirst(true), WithLocalCache(5, time.Second)}, func(c config) any { return c.localFirst }, true},
		{"v0.1 lock wait zero", []Option{WithLockWait(0)}, func(c config) any { return c.lockWait }, time.Duration(0)},
		{"v0.1 breaker zero disables", []Option{WithBreaker(0, 0)}, func(c config) any { return c.breakerFailures }, 0},
	}
	for _, tt := range tests {
		c, err := resolveWith(tt.opts...)
		if err != nil {
			t.Errorf("%s: resolve = %v, want nil", tt.name, err)
			continue
		}
		if got := tt.get(c); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestGroupedOptionsRejectBadFields(t *testing.T) {
	tests := []struct {
		name string
		opt  Option
		want string
	}{
		{"fill lock TTL", WithFillLock(FillLock{TTL: time.Microsecond}), "WithFillLock: TTL"},
		{"breaker cooldown", WithCircuitBreaker(CircuitBreaker{Cooldown: -time.Second}), "WithCircuitBreaker: Cooldown"},
		{"l1 size", WithL1(L1{Size: -1}), "WithL1: Size"},
		{"l1 ttl", WithL1(L1{TTL: time.Microsecond}), "WithL1: TTL"},
		{"l1 prefill without warm-up keys", WithL1(L1{Prefill: true}), "WithL1: Prefill"},
		{"stale soft timeout alone", WithServeStale(ServeStale{SoftTimeout: time.Second}), "WithServeStale: SoftTimeout"},
		{"stale negative", WithServeStale(ServeStale{MaxStale: -time.Second}), "WithServeStale: MaxStale"},
	}
	for _, tt := range tests {
		_, err := resolveWith(tt.opt)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: resolve = %v, want an error starting %q", tt.name, err, tt.want)
		}
	}
}

// TestConfigErrorOneLinePerOption: New's error names each bad option on a
// line of its own, and no option's message spans lines.
func TestConfigErrorOneLinePerOption(t *testing.T) {
	opts := []Option{
		WithTTL(0), WithJitter(2), WithNegativeTTL(-1), WithPrefix("{"),
		WithFillLock(FillLock{TTL: time.Microsecond}), WithLoadTimeout(-1), WithRedisTimeout(0),
		WithCodec(nil), WithCircuitBreaker(CircuitBreaker{Cooldown: -1}),
		WithL1(L1{Size: -1, Prefill: true}), WithServeStale(ServeStale{SoftTimeout: -1}),
		WithEarlyRefresh(-1), WithMaxConcurrentLoads(-1), WithKeyFunc(func(string) string { return "" }),
		WithBatchLoader(BatchLoadFunc[string, int](nil)), WithWarmup[int](nil),
		WithAudit(2, func(cached, fresh string) bool { return cached == fresh }),
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	_, err := New[int, int](rdb, func(context.Context, int) (int, error) { return 0, nil }, opts...)
	if err == nil {
		t.Fatal("New(every option bad) = nil, want an error")
	}
	lines := strings.Split(err.Error(), "\n")
	if lines[0] != "cacheaside: invalid configuration:" {
		t.Errorf("first line = %q, want the header", lines[0])
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "With") {
			t.Errorf("line %q does not start with the option it names", l)
		}
	}
	for _, name := range []string{"WithTTL", "WithJitter", "WithNegativeTTL", "WithPrefix", "WithFillLock", "WithLoadTimeout",
		"WithRedisTimeout", "WithCodec", "WithCircuitBreaker", "WithL1: Size", "WithServeStale",
		"WithEarlyRefresh", "WithMaxConcurrentLoads", "WithKeyFunc", "WithBatchLoader", "WithWarmup", "WithAudit: fraction", "WithAudit: got"} {
		if !strings.Contains(err.Error(), "\n"+name) {
			t.Errorf("New = %q, want a line naming %s", err, name)
		}
	}
}
