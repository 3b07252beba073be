package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// goroutine a Cache starts must end in Close. go-redis's log lines go to
// the log of the running test (testlog), so only failing tests show them.
// go-redis's own dial retrier (started by a client whose dials failed,
// Redis killed) sleeps a second between tries and ends at its next try
// after its client is closed: it is the client's, not the Cache's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testlog.M(m), goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
