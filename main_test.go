package cacheaside_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// goroutine a Cache starts must end in Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
