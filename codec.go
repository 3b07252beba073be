package cacheaside

import "encoding/json"

// A Codec turns values into bytes for Redis and back. Implementations must
// be safe for concurrent use. Unmarshal receives a pointer to a zero V and
// must not keep data after it returns: the cache reuses nothing, but the
// bytes may alias the Redis reply.
//
// Bytes that a codec cannot decode are treated as a miss: the value is
// reloaded and overwritten, and the event is counted in [Stats].Corrupt.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default [Codec]: encoding/json, readable with redis-cli and
// from any language. It is the interoperable baseline; plug in a binary
// codec (protobuf, msgpack, gob) with [WithCodec] when the values are large.
type JSON struct{}

// Marshal implements [Codec].
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements [Codec].
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
