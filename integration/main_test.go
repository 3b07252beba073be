package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

// The tests of this module share the root package's test helpers:
// helpers_test.go and faulthelpers_test.go here are symbolic links to the
// root's, so that there is one copy of each (a _test.go file cannot be
// imported, and the root keeps its helpers out of its API). That is why
// these files are package cacheaside_test too.

// TestMain fails the run if any test leaves a goroutine behind, and sends
// go-redis's log lines to the running test's log (testlog).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testlog.M(m))
}
