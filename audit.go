package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/cacheaside/cacheaside/internal/audit"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redisguard"
)

// The consistency auditor of WithAudit (internal/audit): a sampled
// fraction of Redis hits is loaded again in the background and compared
// with what the hit returned. Only Redis hits are sampled (Get's and
// GetMany's): they carry the time their entry was stored, which gives a
// stale value its age, and they are what every process of the fleet
// shares. L1 hits are copies of Redis hits kept at most the L1 TTL and
// dropped by invalidation messages; sampling them would need the load
// time in every L1 entry.

// checkAudit validates WithAudit's settings against the value type V and
// returns its comparison function, nil without the option.
func checkAudit[V any](cfg *config) (func(cached, fresh V) bool, error) {
	if cfg.auditSame == nil {
		return nil, nil
	}
	var errs []error
	if f := cfg.auditFraction; math.IsNaN(f) || f <= 0 || f > 1 {
		errs = append(errs, fmt.Errorf("WithAudit: fraction %v, want one in (0, 1]", f))
	}
	same, ok := cfg.auditSame.(func(cached, fresh V) bool)
	switch {
	case !ok:
		errs = append(errs, fmt.Errorf("WithAudit: got %T, want func(cached, fresh %v) bool", cfg.auditSame, reflect.TypeFor[V]()))
	case same == nil:
		errs = append(errs, errors.New("WithAudit: nil comparison function"))
	}
	return same, errors.Join(errs...)
}

// startAudit builds the auditor and starts its worker, which Close stops.
func (c *Cache[K, V]) startAudit(same func(cached, fresh V) bool) {
	if same == nil {
		return
	}
	c.audit = audit.New(audit.Config[K, V]{
		Fraction: c.cfg.auditFraction,
		Same:     same,
		Load:     c.auditLoad,
		Replaced: c.auditReplaced,
		Logger:   c.logger,
	})
	c.tracker.spawn() // New has not returned: nothing can be waiting yet
	go func() {
		defer c.tracker.done()
		c.audit.Run(c.life)
	}()
}

// auditHit offers a Redis hit of key to the auditor, if it is sampled.
// The caller checks c.audit != nil, so that the hit path without the
// option costs one nil check.
func (c *Cache[K, V]) auditHit(key K, vkey string, r result[V], h envelope.Header) {
	if c.audit.Sample() {
		c.audit.Offer(audit.Sample[K, V]{Key: key, VKey: vkey, Val: r.val, NotFound: r.err != nil, Stored: h.Stored})
	}
}

// auditLoad is one audit's load: the loader under the load timeout, in a
// free load slot or not at all (audits never wait for the slots of real
// loads: the sample is dropped), counted apart from Stats.Loads, writing
// nothing and never under the fill lock.
func (c *Cache[K, V]) auditLoad(ctx context.Context, key K) (v V, notFound bool, err error) {
	if c.loads != nil {
		if !c.loads.TryAcquire(1) {
			return v, false, audit.ErrDropped
		}
		defer c.loads.Release(1)
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.loadTimeout)
	defer cancel()
	lctx = context.WithValue(lctx, loadScopeKey{}, &loadScope{}) // SetTTL in the loader does nothing
	err = callContained(lctx, func(ctx context.Context) error {
		var err error
		v, err = safeLoad(ctx, c.load, key)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return v, true, nil
	}
	if err == nil && lctx.Err() != nil {
		err = lctx.Err() // returned after the timeout: not compared
	}
	return v, false, err
}

// auditReplaced reads vkey again and reports whether its entry is no
// longer the one stored at stored: gone, stored at another time, or made
// a miss by a Clear or InvalidateTag (the clock is read with it, as by
// GetMany). An entry without a stored time (written before
// v0.3) counts as in place.
func (c *Cache[K, V]) auditReplaced(ctx context.Context, vkey string, stored time.Time) (bool, error) {
	out, failed, err := c.mget(ctx, []string{vkey})
	if err != nil {
		return false, err
	}
	raw, err := redisguard.Reply(out, failed, 0)
	switch {
	case err != nil:
		return false, err
	case raw == nil: // gone, or another Redis type (MGET reads it as nil)
		return true, nil
	}
	h, _, err := envelope.Decode(raw)
	if err != nil || !c.current(h) {
		return true, nil
	}
	return !h.Stored.IsZero() && !h.Stored.Equal(stored), nil
}

// auditCounts adds the auditor's counters to s.
func (c *Cache[K, V]) auditCounts(s *Stats) {
	if c.audit == nil {
		return
	}
	a := c.audit.Counts()
	s.AuditChecks, s.AuditStale, s.AuditDropped, s.AuditErrors, s.AuditOldestStale = a.Checks, a.Stale, a.Dropped, a.Errors, a.OldestStale
}
