package cacheaside_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// unreadableEntries are bytes a Cache[int64, item] finds under its value
// key and cannot read: they must be misses, reloaded and overwritten.
var unreadableEntries = []struct {
	name string
	raw  []byte
}{
	{"garbage", []byte("\x00\xffnot an envelope at all")},
	{"empty string", []byte{}},
	{"plain JSON from another writer", []byte(`{"id":1,"name":"foreign"}`)},
	{"unknown envelope version 99", append([]byte{0xCA, 99, 0x00, 0x02, 0x00, 0x00}, `{"id":1,"name":"v99"}`...)},
	{"unknown must-understand flag", append([]byte{0xCA, 0x01, 0x02, 0x02, 0x00, 0x00}, `{"id":1,"name":"flag"}`...)},
	{"valid envelope, payload not an item", envelope.Append(nil, envelope.Header{}, []byte(`{"id":"not a number"}`))},
	{"valid envelope, payload not JSON", envelope.Append(nil, envelope.Header{}, []byte("\x01\x02\x03"))},
	{"truncated envelope", envelope.Append(nil, envelope.Header{Expiry: time.Now().Add(time.Hour)}, nil)[:4]},
}

// TestGetUnreadableEntryIsReloaded proves that corrupt or foreign bytes
// under a value key are a miss: Get returns the loader's value with a nil
// error, the entry is overwritten with a readable one, and the event is
// counted in Stats().Corrupt.
func TestGetUnreadableEntryIsReloaded(t *testing.T) {
	for _, tt := range unreadableEntries {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			var loads atomic.Int64
			c := newCache(t, srv, func(ctx context.Context, id int64) (item, error) {
				loads.Add(1)
				return item{ID: id, Name: "from db"}, nil
			})
			srv.CLI(t, "SET", "ca:{1}", string(tt.raw))

			want := item{ID: 1, Name: "from db"}
			if got, err := c.Get(testContext(t), 1); err != nil || got != want {
				t.Fatalf("Get(%v) over %s = %v, %v; want %v, nil", 1, tt.name, got, err, want)
			}
			if got, ok := storedValue[item](t, srv, "ca:{1}"); !ok || got != want {
				t.Errorf("Redis ca:{1} after the reload = %v (present %v), want %v", got, ok, want)
			}
			if ms := pttl(t, srv, "ca:{1}"); ms <= 0 {
				t.Errorf("PTTL ca:{1} after the reload = %d, want a positive TTL", ms)
			}
			if s := c.Stats(); s.Corrupt < 1 || s.Loads != 1 || loads.Load() != 1 {
				t.Errorf("Stats() = %+v, want Corrupt ≥ 1 and Loads 1", s)
			}
			if got, err := c.Get(testContext(t), 1); err != nil || got != want || loads.Load() != 1 {
				t.Errorf("second Get(%v) = %v, %v with %d loads; want %v, nil from Redis", 1, got, err, loads.Load(), want)
			}
		})
	}
}

// panickyCodec is JSON whose Unmarshal panics on payloads that contain
// "poison".
type panickyCodec struct{}

func (panickyCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (panickyCodec) Unmarshal(b []byte, v any) error {
	if strings.Contains(string(b), "poison") {
		panic("codec cannot cope")
	}
	return json.Unmarshal(b, v)
}

// TestGetCodecPanicIsMiss proves that a codec that panics while decoding
// an entry makes that entry a miss, not a crash and not an error.
func TestGetCodecPanicIsMiss(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		return "clean " + key, nil
	}, cacheaside.WithCodec(panickyCodec{}))
	srv.CLI(t, "SET", "ca:{k}", string(envelope.Append(nil, envelope.Header{}, []byte(`"poison"`))))

	if got, err := c.Get(testContext(t), "k"); err != nil || got != "clean k" {
		t.Fatalf("Get(%q) over an entry the codec panics on = %q, %v; want %q, nil", "k", got, err, "clean k")
	}
	if s := c.Stats(); s.Corrupt < 1 || s.Panics != 0 {
		t.Errorf("Stats() = %+v, want Corrupt ≥ 1 and Panics 0 (a codec panic is not a loader panic)", s)
	}
	if got, ok := storedValue[string](t, srv, "ca:{k}"); !ok || got != "clean k" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q", got, ok, "clean k")
	}
}

// TestWaiterReloadsEntryItCannotRead proves that a Get waiting on the fill
// lock treats an entry it cannot read as a miss, as Get does everywhere
// else. The scenario is a rolling deploy: a process of a newer version
// holds the lock, fills the key in an envelope version this one does not
// know, and releases the lock. The waiter must not keep waiting for a
// holder that is gone: it should reload (and overwrite the entry) promptly,
// not wait out its whole lock wait and then return a value it does not
// store.
func TestWaiterReloadsEntryItCannotRead(t *testing.T) {
	srv := redistest.Start(t)
	const lockWait = 4 * time.Second
	var loads atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, id int64) (item, error) {
		loads.Add(1)
		return item{ID: id, Name: "from db"}, nil
	}, cacheaside.WithLockWait(lockWait))
	srv.CLI(t, "SET", "ca:{1}:lock", "token-of-a-newer-process", "PX", "60000")

	res := getAsync(testContext(t), c, int64(1))
	deadline := time.Now().Add(waitLimit)
	for c.Stats().LockWaits == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Get(1) never waited on the lock: Stats() = %+v", c.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	// The newer process fills with an envelope version 2 and releases.
	filled := time.Now()
	srv.CLI(t, "SET", "ca:{1}", string(append([]byte{0xCA, 0x02, 0x00, 0x02, 0x00, 0x00}, `{"id":1}`...)), "PX", "600000")
	srv.CLI(t, "DEL", "ca:{1}:lock")

	r := await(t, res, "the waiting Get")
	took := time.Since(filled)
	want := item{ID: 1, Name: "from db"}
	if r.err != nil || r.val != want {
		t.Fatalf("Get(%v) = %v, %v; want %v, nil", 1, r.val, r.err, want)
	}
	if took > lockWait/2 {
		t.Errorf("Get(1) returned %v after the lock was released over an unreadable entry, want well under its lock wait of %v "+
			"(it waited for a holder that was gone; Stats().Corrupt = %d)", took.Round(time.Millisecond), lockWait, c.Stats().Corrupt)
	}
	raw := srv.CLI(t, "GET", "ca:{1}")
	if _, payload, err := envelope.Decode([]byte(raw)); err != nil || string(payload) != `{"id":1,"name":"from db"}` {
		t.Errorf("Redis ca:{1} after Get(1) returned = %q (decode error %v), want the reloaded value written over the unreadable entry", raw, err)
	}
}

// TestWrongTypeValueIsReplaced puts a list or a hash under a value key, as
// another program sharing the Redis might. Reading it gives WRONGTYPE (or
// nil from MGET): an unreadable entry, which Get and GetMany treat as a
// miss that takes the fill lock and replaces it. It is neither a Redis
// fault nor a breaker failure, and once replaced the key is a hit.
func TestWrongTypeValueIsReplaced(t *testing.T) {
	foreign := map[string][]string{
		"list": {"RPUSH", "ca:{1}", "a", "b"},
		"hash": {"HSET", "ca:{1}", "field", "value"},
	}
	for _, kind := range []string{"list", "hash"} {
		for _, via := range []string{"Get", "GetMany", "GetMany with a batch loader"} {
			t.Run(kind+"/"+via, func(t *testing.T) {
				srv := redistest.Start(t)
				var loads atomic.Int64
				load := func(ctx context.Context, id int64) (item, error) {
					loads.Add(1)
					return item{ID: id, Name: "from db"}, nil
				}
				opts := []cacheaside.Option{cacheaside.WithBreaker(1, time.Minute)}
				if via == "GetMany with a batch loader" {
					opts = append(opts, cacheaside.WithBatchLoader(func(ctx context.Context, ids []int64) (map[int64]item, error) {
						out := make(map[int64]item, len(ids))
						for _, id := range ids {
							loads.Add(1)
							out[id] = item{ID: id, Name: "from db"}
						}
						return out, nil
					}))
				}
				c := newCache(t, srv, load, opts...)
				srv.CLI(t, foreign[kind]...)
				get := func() (item, error) {
					if via == "Get" {
						return c.Get(testContext(t), 1)
					}
					m, err := c.GetMany(testContext(t), []int64{1})
					return m[1], err
				}
				want := item{ID: 1, Name: "from db"}
				for i := range 3 {
					if got, err := get(); err != nil || got != want {
						t.Fatalf("%s(1) #%d over a %s = %v, %v; want %v, nil", via, i+1, kind, got, err, want)
					}
				}
				s := c.Stats()
				if n := loads.Load(); n != 1 {
					t.Errorf("loads for 3 calls of %s over a %s = %d, want 1 (replaced once, then hits)", via, kind, n)
				}
				if s.RedisErrors != 0 || s.Breaker != cacheaside.BreakerClosed || s.LockAcquired != 1 {
					t.Errorf("Stats() = %+v, want RedisErrors 0, Breaker closed, LockAcquired 1 (WRONGTYPE is an unreadable entry, not a fault)", s)
				}
				if typ := srv.CLI(t, "TYPE", "ca:{1}"); typ != "string" {
					t.Fatalf("TYPE ca:{1} after %s = %s, want string (the %s replaced)", via, typ, kind)
				}
				if got, ok := storedValue[item](t, srv, "ca:{1}"); !ok || got != want {
					t.Errorf("Redis ca:{1} = %v (present %v), want %v", got, ok, want)
				}
			})
		}
	}
}

// TestCachesOfOtherTypesDoNotReadEachOther: two caches with int keys and
// default options (so the same prefix, "ca:") on one Redis, one of users
// and one of products. Each finds the other's entry under the same key: it
// must be a miss (its own loader called, counted in Stats.Corrupt), never
// the other's value decoded into its own type. Before the envelope carried
// a type fingerprint, the product cache returned the user row as a
// product with a nil error and Corrupt = 0.
func TestCachesOfOtherTypesDoNotReadEachOther(t *testing.T) {
	type user struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	type product struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	srv := redistest.Start(t)
	ctx := testContext(t)
	var userLoads, productLoads atomic.Int64
	users := newCache(t, srv, func(_ context.Context, id int) (user, error) {
		userLoads.Add(1)
		return user{ID: id, Name: "Ada"}, nil
	})
	products := newCache(t, srv, func(_ context.Context, id int) (product, error) {
		productLoads.Add(1)
		return product{ID: id, Name: "Lamp"}, nil
	})

	if u, err := users.Get(ctx, 7); err != nil || u.Name != "Ada" {
		t.Fatalf("users.Get(7) = %+v, %v, want Ada", u, err)
	}
	p, err := products.Get(ctx, 7)
	if err != nil || p.Name != "Lamp" {
		t.Errorf("products.Get(7) = %+v, %v, want Lamp (the user entry must not be read as a product)", p, err)
	}
	if n := productLoads.Load(); n != 1 {
		t.Errorf("product loads = %d, want 1: the user entry is a miss for products", n)
	}
	if s := products.Stats(); s.Corrupt != 1 || s.Hits != 0 {
		t.Errorf("products.Stats() Corrupt = %d, Hits = %d, want 1, 0", s.Corrupt, s.Hits)
	}
	// The product load overwrote the key: now the user cache must miss.
	u, err := users.Get(ctx, 7)
	if err != nil || u.Name != "Ada" {
		t.Errorf("users.Get(7) again = %+v, %v, want Ada", u, err)
	}
	if n := userLoads.Load(); n != 2 {
		t.Errorf("user loads = %d, want 2: the product entry is a miss for users", n)
	}
	if s := users.Stats(); s.Corrupt != 1 {
		t.Errorf("users.Stats().Corrupt = %d, want 1", s.Corrupt)
	}
}

// TestCachesOfOtherCodecsDoNotReadEachOther: the same value type under two
// codecs that happen to read each other's bytes is still two namespaces.
func TestCachesOfOtherCodecsDoNotReadEachOther(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	var loads atomic.Int64
	load := func(_ context.Context, id int) (string, error) { loads.Add(1); return "v", nil }
	a := newCache(t, srv, load)
	b := newCache(t, srv, load, cacheaside.WithCodec(otherJSON{}))
	if _, err := a.Get(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := loads.Load(); n != 2 {
		t.Errorf("loads = %d, want 2: an entry of another codec is a miss", n)
	}
	if s := b.Stats(); s.Corrupt != 1 {
		t.Errorf("b.Stats().Corrupt = %d, want 1", s.Corrupt)
	}
}

// otherJSON is a codec that reads the default codec's bytes.
type otherJSON struct{}

func (otherJSON) Marshal(v any) ([]byte, error)   { return json.Marshal(v) }
func (otherJSON) Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestV01EntryIsStillRead: an entry without a type fingerprint (written by
// v0.1) is read, not counted as corrupt; it carries no clock, so on a
// prefix whose clock key is missing (never written before this version,
// or lost) it is reloaded once: the first read recreates the clock with
// its last Clear at now (clockloss.go), and nothing tells a prefix that
// never had a Clear from one whose clock key was evicted.
func TestV01EntryIsStillRead(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	old := envelope.Append(nil, envelope.Header{Expiry: time.Now().Add(time.Hour)}, []byte(`{"id":1,"name":"v0.1"}`))
	srv.CLI(t, "SET", valueKey("1"), string(old))
	var loads atomic.Int64
	c := newCache(t, srv, func(context.Context, int64) (item, error) {
		loads.Add(1)
		return item{ID: 1, Name: "reloaded"}, nil
	})
	for range 3 {
		if v, err := c.Get(ctx, 1); err != nil || v.Name != "reloaded" {
			t.Errorf("Get(1) = %+v, %v, want the reloaded entry", v, err)
		}
	}
	if n, s := loads.Load(), c.Stats(); n != 1 || s.Corrupt != 0 {
		t.Errorf("loads = %d, Stats().Corrupt = %d; want 1 (once, not corrupt) and 0", n, s.Corrupt)
	}
}
