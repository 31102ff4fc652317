package cachefilter_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test of the package leaves a goroutine behind (the Store's Run, its
// L1's maintenance, collapse timers).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
