package cacheaside_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// goroutine a Cache starts must end in Close. go-redis's own dial retrier
// (started by a client whose dials failed, Redis killed) sleeps a second
// between tries and ends at its next try after its client is closed: it is
// the client's, not the Cache's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
