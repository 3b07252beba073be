package cacheaside

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Redis key layout. For a key whose encoded form is s the cache uses
//
//	<prefix>{s}        the value, in the envelope format
//	<prefix>{s}:lock   the fill lock (a random token, with PX = lock TTL)
//	<prefix>{s}:gen    the generation, rewritten by Invalidate and Set
//
// The braces make s a Redis Cluster hash tag, so the three keys share one
// slot and every script touches one slot only. When s is empty or contains
// '}', which would end the tag early, or starts with '#', which would make
// it look like such a tag, the tag is "#" followed by the hex SHA-256 of s
// instead.
const (
	lockSuffix = ":lock"
	genSuffix  = ":gen"
)

// keyEncoder turns a K into the string s of the layout above.
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

// valueKey returns the Redis key of the value for encoded key s.
func valueKey(prefix, s string) string {
	if s == "" || s[0] == '#' || strings.IndexByte(s, '}') >= 0 {
		sum := sha256.Sum256([]byte(s))
		return prefix + "{#" + hex.EncodeToString(sum[:]) + "}"
	}
	return prefix + "{" + s + "}"
}

// keys holds the three Redis keys of one cache key (value, lock,
// generation), in the order the Lua scripts take them.
type keys []string

func keysFor(vkey string) keys {
	return keys{vkey, vkey + lockSuffix, vkey + genSuffix}
}

// clusterSlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of
// its hash tag, modulo 16384. go-redis computes the same internally but
// does not export it; GetMany needs it to send one MGET per slot.
func clusterSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
