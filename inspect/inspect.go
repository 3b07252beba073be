// Package inspect implements an [http.Handler] that shows what a
// [cacheaside.Cache] has stored in Redis for one key, the state of the
// cache's circuit breakers and its [cacheaside.Stats], and can invalidate a
// key. It is a debugging page: mount it on an internal or authenticated
// port, as net/http/pprof is, since it reveals cached values and lets its
// users invalidate keys.
//
// The handler answers
//
//	GET  ?key=K                 the key's entry, lock and generation, the breakers and Stats
//	GET                         the breakers and Stats only
//	POST key=K (form or query)  Invalidate(K), then the key's page (303 See Other)
//
// An empty key is no key: a POST without one is a 400, as is a key that
// the parser rejects; other methods get a 405.
//
// in HTML, or in JSON when the request asks for it (format=json or an
// Accept header naming application/json). Mount it under a prefix with
// [http.StripPrefix] or as is: it reads only the query and the form.
//
// # What it reads
//
// The handler reads Redis directly, with the client given to [New] (the
// one the cache was built on), at the keys [cacheaside.Cache.RedisKey]
// names: the value (decoded from its envelope: version, flags, logical
// expiry, load time, the fingerprint of the writer's value type and codec
// and whether it is the inspected cache's, and the payload as text when
// it is UTF-8, else in hex), its PTTL, the fill lock's holder token and PTTL and the
// generation's value and PTTL. Bytes that are not an envelope this
// version of the cache can read, and keys of another Redis type, are shown
// as such. The read never goes through the cache, so it neither counts in
// Stats nor fills the key, and it works while the cache's breakers are
// open. Invalidation does go through the cache ([cacheaside.Cache.Invalidate]),
// so that other processes drop their in-process copies too.
package inspect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/redis/go-redis/v9"
)

// Target is what the handler needs from a cache. Every
// [*cacheaside.Cache] with keys of type K satisfies it.
type Target[K comparable] interface {
	RedisKey(key K) string
	Invalidate(ctx context.Context, keys ...K) error
	Stats() cacheaside.Stats
	BreakerStates() map[string]cacheaside.BreakerState
}

// fingerprinted is implemented by a cache that can name the fingerprint
// of its value type and codec, as every [*cacheaside.Cache] does: the
// handler then says whether a stored entry was written by a cache of the
// same type. It is not part of Target, so that Target's other
// implementations keep compiling.
type fingerprinted interface {
	TypeFingerprint() uint32
}

// Handler is the inspector of one cache. It is safe for concurrent use.
type Handler[K comparable] struct {
	rdb   redis.UniversalClient
	c     Target[K]
	parse func(string) (K, error)
}

// readTimeout bounds the Redis reads and the invalidation of one request.
const readTimeout = 2 * time.Second

// New returns the inspector of c, which stores its entries through rdb.
// parse turns the key parameter into a key of the cache; nil means the
// default: the string itself for string kinds, strconv for integer kinds.
// New returns an error when rdb or c is nil, or when parse is nil and K is
// of another kind.
func New[K comparable](rdb redis.UniversalClient, c Target[K], parse func(string) (K, error)) (*Handler[K], error) {
	var errs []error
	if isNil(rdb) {
		errs = append(errs, errors.New("nil Redis client"))
	}
	if isNil(c) {
		errs = append(errs, errors.New("nil cache"))
	}
	if parse == nil {
		var err error
		if parse, err = defaultParse[K](); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	return &Handler[K]{rdb: rdb, c: c, parse: parse}, nil
}

// isNil reports whether v is nil or a nil pointer.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// defaultParse returns the parser of keys of a string or integer kind.
func defaultParse[K comparable]() (func(string) (K, error), error) {
	t := reflect.TypeFor[K]()
	conv := func(f func(string) (reflect.Value, error)) func(string) (K, error) {
		return func(s string) (K, error) {
			var k K
			v, err := f(s)
			if err != nil {
				return k, err
			}
			reflect.ValueOf(&k).Elem().Set(v.Convert(t))
			return k, nil
		}
	}
	switch t.Kind() {
	case reflect.String:
		return conv(func(s string) (reflect.Value, error) { return reflect.ValueOf(s), nil }), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return conv(func(s string) (reflect.Value, error) {
			n, err := strconv.ParseInt(s, 10, t.Bits())
			return reflect.ValueOf(n), err
		}), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return conv(func(s string) (reflect.Value, error) {
			n, err := strconv.ParseUint(s, 10, t.Bits())
			return reflect.ValueOf(n), err
		}), nil
	}
	return nil, fmt.Errorf("key type %v has no default parser: pass one to New", t)
}

// Report is what the handler shows, and its JSON form.
type Report struct {
	Key         string                             `json:"key,omitempty"`
	Invalidated bool                               `json:"invalidated,omitempty"`
	Entry       *Entry                             `json:"entry,omitempty"`
	Breakers    map[string]cacheaside.BreakerState `json:"breakers"`
	Stats       cacheaside.Stats                   `json:"stats"`
}

// ServeHTTP implements [http.Handler].
func (h *Handler[K]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		h.fail(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	var rep Report
	raw := r.FormValue("key") // the query, or for a POST the form first
	if raw == "" && r.Method == http.MethodPost {
		h.fail(w, r, http.StatusBadRequest, errors.New("missing key"))
		return
	}
	if raw != "" {
		k, err := h.parse(raw)
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, fmt.Errorf("key %q: %w", raw, err))
			return
		}
		rep.Key = raw
		if r.Method == http.MethodPost {
			if err := h.c.Invalidate(ctx, k); err != nil {
				h.fail(w, r, http.StatusBadGateway, fmt.Errorf("invalidate %q: %w", raw, err))
				return
			}
			if !wantsJSON(r) {
				// A relative reference, resolved by the browser against
				// the page's own URL: http.Redirect would resolve it
				// against r.URL.Path, which lacks the prefix when the
				// handler is mounted under http.StripPrefix.
				w.Header().Set("Location", "?"+url.Values{"key": {raw}, "invalidated": {"1"}}.Encode())
				w.WriteHeader(http.StatusSeeOther)
				return
			}
			rep.Invalidated = true
		}
		var fp uint32
		if f, ok := h.c.(fingerprinted); ok {
			fp = f.TypeFingerprint()
		}
		rep.Entry = readEntry(ctx, h.rdb, h.c.RedisKey(k), fp)
	}
	rep.Invalidated = rep.Invalidated || r.URL.Query().Get("invalidated") == "1"
	rep.Breakers = h.c.BreakerStates()
	rep.Stats = h.c.Stats()
	h.write(w, r, http.StatusOK, rep)
}

// wantsJSON reports whether r asks for JSON rather than HTML.
func wantsJSON(r *http.Request) bool {
	return r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json")
}
