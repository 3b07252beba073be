package cacheaside_test

import (
	"fmt"
	"testing"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkGetHitAudit is BenchmarkGetHit on a ContextTimeoutEnabled
// client without the auditor and with it sampling 1% and every hit (past
// its rate cap, a sampled hit is dropped: the cost of sampling alone):
//
//	go test -run '^$' -bench GetHitAudit -count 10 . | tee audit.txt
//	benchstat -col /audit audit.txt
func BenchmarkGetHitAudit(b *testing.B) {
	srv := redistest.Start(b)
	warmCache(b, srv.Client(b))
	same := func(cached, fresh benchProduct) bool { return cached.ID == fresh.ID && cached.Name == fresh.Name }
	for _, g := range []int{1, 16} {
		for _, a := range []struct {
			name string
			opts []cacheaside.Option
		}{
			{"off", nil},
			{"0.01", []cacheaside.Option{cacheaside.WithAudit(0.01, same)}},
			{"1", []cacheaside.Option{cacheaside.WithAudit(1, same)}},
		} {
			b.Run(fmt.Sprintf("goroutines=%d/audit=%s", g, a.name), func(b *testing.B) {
				rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
				defer rdb.Close()
				s := benchHitCache(b, rdb, g, a.opts...)
				b.ReportMetric(float64(s.AuditChecks)/float64(b.N), "audits/op")
			})
		}
	}
}
