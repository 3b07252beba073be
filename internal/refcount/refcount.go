// Package refcount shares one value per key among the users that ask for
// it: the first builds it, the last lets it go.
package refcount

import (
	"reflect"
	"sync"
)

// Registry holds shared values of type T by key. The zero value is ready
// to use.
type Registry[K comparable, T any] struct {
	mu sync.Mutex
	m  map[K]*entry[T]
}

type entry[T any] struct {
	v    T
	refs int
}

// Acquire returns the value shared under key, building it with build on
// first use (under the registry's lock: build must not block), and the
// function that releases it, which reports whether that release was the
// last (the caller then stops the value; a later Acquire builds a new
// one). release must be called once. A key that is not a pointer (a
// client value, which may not even be comparable) cannot be told apart
// from another: it gets a value of its own, whose release is the last.
func (r *Registry[K, T]) Acquire(key K, build func() T) (v T, release func() (last bool)) {
	if t := reflect.TypeOf(key); t == nil || t.Kind() != reflect.Pointer {
		return build(), func() bool { return true }
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[K]*entry[T]{}
	}
	e := r.m[key]
	if e == nil {
		e = &entry[T]{v: build()}
		r.m[key] = e
	}
	e.refs++
	return e.v, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		e.refs--
		if e.refs > 0 {
			return false
		}
		if r.m[key] == e {
			delete(r.m, key)
		}
		return true
	}
}
