package cacheaside

// result is what a flight hands to every caller that joined it.
type result[V any] struct {
	val   V
	err   error
	src   source
	stale bool // served past its logical expiry (WithStaleIfError)
}

// source says where a result came from.
type source uint8

const (
	fromLoad  source = iota // the loader
	fromRedis               // a Redis hit
	fromLocal               // the in-process cache
)
