package cacheaside

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// keyEncoder turns a K into the string s of the key layout
// (internal/protocol/keys.go).
type keyEncoder[K comparable] func(K) string

// newKeyEncoder returns the user's WithKeyFunc if it has the right type, or
// a default encoding for string and integer key types.
func newKeyEncoder[K comparable](custom any) (keyEncoder[K], error) {
	if custom != nil {
		f, ok := custom.(func(K) string)
		if !ok {
			var k K
			return nil, fmt.Errorf("WithKeyFunc: got %T, want func(%T) string", custom, k)
		}
		if f == nil {
			return nil, fmt.Errorf("WithKeyFunc: nil function")
		}
		return f, nil
	}
	var zero K
	switch any(zero).(type) {
	case string:
		return func(k K) string { return any(k).(string) }, nil
	case int:
		return func(k K) string { return strconv.Itoa(any(k).(int)) }, nil
	case int64:
		return func(k K) string { return strconv.FormatInt(any(k).(int64), 10) }, nil
	case int32:
		return func(k K) string { return strconv.FormatInt(int64(any(k).(int32)), 10) }, nil
	case uint64:
		return func(k K) string { return strconv.FormatUint(any(k).(uint64), 10) }, nil
	case uint32:
		return func(k K) string { return strconv.FormatUint(uint64(any(k).(uint32)), 10) }, nil
	}
	// Named string and integer types (type ProductID int64) use reflection.
	switch t := reflect.TypeFor[K](); t.Kind() {
	case reflect.String:
		return func(k K) string { return reflect.ValueOf(k).String() }, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(k K) string { return strconv.FormatInt(reflect.ValueOf(k).Int(), 10) }, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return func(k K) string { return strconv.FormatUint(reflect.ValueOf(k).Uint(), 10) }, nil
	default:
		return nil, fmt.Errorf("key type %v has no default encoding: pass WithKeyFunc", t)
	}
}

// appendValueKey appends the value key of key (protocol.ValueKey) to dst
// when it can be built without an allocation of its own: the default
// encoding of a string or built-in integer key, which ValueKey does not
// hash. ok is false otherwise (WithKeyFunc, other key types, keys that are
// hashed); the caller then calls ValueKey. Get builds the key this way in
// a buffer on its stack: a hit in the L1, or a Get that joins a flight
// already in the air, needs no string of its own.
func (c *Cache[K, V]) appendValueKey(dst []byte, key K) (_ []byte, ok bool) {
	if c.cfg.keyFunc != nil {
		return dst, false
	}
	b := append(append(dst, c.cfg.prefix...), '{')
	tag := len(b)
	b, ok = appendKey(b, key)
	if !ok || !protocol.Plain(b[tag:]) {
		return dst, false
	}
	return append(b, '}'), true
}

// appendKey appends the default encoding of k (what newKeyEncoder's
// encoder returns, without WithKeyFunc) to dst for string and built-in
// integer key types, with no allocation of its own; ok is false for other
// types, which only the encoder handles.
func appendKey[K comparable](dst []byte, k K) (_ []byte, ok bool) {
	switch k := any(k).(type) {
	case string:
		return append(dst, k...), true
	case int:
		return strconv.AppendInt(dst, int64(k), 10), true
	case int64:
		return strconv.AppendInt(dst, k, 10), true
	case int32:
		return strconv.AppendInt(dst, int64(k), 10), true
	case uint64:
		return strconv.AppendUint(dst, k, 10), true
	case uint32:
		return strconv.AppendUint(dst, uint64(k), 10), true
	}
	return dst, false
}
