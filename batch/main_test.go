package batch

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (item goroutines,
// transport connections).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
