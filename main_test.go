package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// goroutine a Cache starts must end in Close. go-redis's log lines go to
// the log of the running test (testlog), so only failing tests show them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testlog.M(m))
}
