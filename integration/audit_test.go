package cacheaside_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestPostgresAuditFindsUpdateWithoutInvalidate: rows changed in
// PostgreSQL with UPDATE and DELETE and no Invalidate are found stale by
// the auditor (the deleted row as a value the database no longer has),
// with the age of the cached values; before the change no row is, and the
// cache keeps serving what it has (the auditor only measures).
func TestPostgresAuditFindsUpdateWithoutInvalidate(t *testing.T) {
	kettle := product{ID: 2, Name: "kettle", PriceCents: 2999}
	cup := product{ID: 3, Name: "cup", PriceCents: 499}
	db := newCatalog(t, teapot, kettle, cup)
	srv := redistest.Start(t)
	c := newCache(t, srv, db.load, cacheaside.WithAudit(1, func(cached, fresh product) bool { return cached == fresh }))
	ctx := testContext(t)

	before := time.Now()
	for _, p := range []product{teapot, kettle, cup} {
		mustGetValue(t, c, p.ID, p, "first Get")
	}
	for deadline := time.Now().Add(waitLimit); c.Stats().AuditChecks < 3 && time.Now().Before(deadline); {
		getAll(t, c, teapot, kettle, cup)
	}
	if s := c.Stats(); s.AuditChecks < 3 || s.AuditStale != 0 {
		t.Fatalf("before the change: Stats = %+v, want 3 checks and no stale value", s)
	}
	time.Sleep(200 * time.Millisecond)
	for _, q := range []string{"UPDATE %s SET price_cents = 2499 WHERE id = 1", "DELETE FROM %s WHERE id = 2"} {
		if _, err := db.pool.Exec(ctx, fmt.Sprintf(q, db.table)); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Hits of each row, paced under the auditor's rate cap, until both
	// changed rows were found.
	for deadline := time.Now().Add(waitLimit); c.Stats().AuditStale < 2 && time.Now().Before(deadline); {
		getAll(t, c, teapot, kettle, cup)
	}
	s := c.Stats()
	if s.AuditStale < 2 {
		t.Errorf("Stats = %+v, want AuditStale >= 2: the updated and the deleted row", s)
	}
	if upper := time.Since(before) + 2*time.Millisecond; s.AuditOldestStale < 200*time.Millisecond || s.AuditOldestStale > upper {
		t.Errorf("AuditOldestStale = %v, want in [200ms, %v]", s.AuditOldestStale, upper)
	}
	if s.Loads != 3 {
		t.Errorf("Stats.Loads = %d, want 3: audits are not loads", s.Loads)
	}
	t.Logf("%d of %d sampled hits were stale; the oldest was %v old", s.AuditStale, s.AuditChecks, s.AuditOldestStale)
}

// getAll Gets each product and expects its cached value, then pauses
// 150ms: hits paced under the auditor's rate cap.
func getAll(t *testing.T, c *cacheaside.Cache[int64, product], ps ...product) {
	t.Helper()
	for _, p := range ps {
		mustGetValue(t, c, p.ID, p, "Get")
	}
	time.Sleep(150 * time.Millisecond)
}
