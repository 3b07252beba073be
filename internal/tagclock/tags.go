package tagclock

import (
	"strconv"
	"sync"
)

// MaxVersions bounds the tag versions a process keeps; past it the map
// starts again empty.
const MaxVersions = 4096

// Versions is what one process knows of the versions of a prefix's tags
// (the clock of each tag's last invalidation), all read as of one clock:
// a value loaded at clock L and tagged t is current if t's version as of
// a clock at least the read's is at most L. While the clock does not
// move, the versions read once serve every read. Its methods are safe for
// concurrent use.
type Versions struct {
	mu   sync.RWMutex
	asOf uint64            // the clock the versions were read at
	m    map[string]uint64 // tag -> version as of asOf
}

// Lookup returns the version of tag as of a clock of at least clock, if
// known.
func (v *Versions) Lookup(tag []byte, clock uint64) (uint64, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.asOf < clock {
		return 0, false
	}
	ver, ok := v.m[string(tag)]
	return ver, ok
}

// Store records the versions of tags read at clock asOf (raws[i] the raw
// value of tags[i]'s key, nil when missing: never invalidated). A value
// that is not a clock is a version newer than any: every value carrying
// the tag is stale until an InvalidateTag rewrites it.
func (v *Versions) Store(asOf uint64, tags []string, raws [][]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if asOf < v.asOf {
		return // a read older than what is known
	}
	if asOf > v.asOf || len(v.m)+len(tags) > MaxVersions {
		v.asOf, v.m = asOf, make(map[string]uint64, len(tags))
	}
	for i, t := range tags {
		v.m[t] = ParseVersion(raws[i])
	}
}

// ParseVersion reads the value of a tag key: 0 when missing, the largest
// version when it is not a clock.
func ParseVersion(raw []byte) uint64 {
	if raw == nil {
		return 0
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return ^uint64(0)
	}
	return n
}
