package integration_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind, and sends
// go-redis's log lines to the running test's log (testlog).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testlog.M(m))
}
