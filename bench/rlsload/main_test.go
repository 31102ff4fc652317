package main

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBusiest(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(sentMs, answeredMs int) admission {
		return admission{t0.Add(time.Duration(sentMs) * time.Millisecond), t0.Add(time.Duration(answeredMs) * time.Millisecond)}
	}
	tests := []struct {
		name   string
		adm    []admission
		w      time.Duration
		hi, lo int
	}{
		{name: "none", w: time.Second},
		{name: "instant answers, one span", adm: []admission{at(0, 0), at(500, 500), at(1000, 1000), at(1001, 1001)}, w: time.Second, hi: 3, lo: 3},
		{name: "a slow answer may fall in either span", adm: []admission{at(0, 0), at(900, 1200), at(2000, 2000)}, w: time.Second, hi: 2, lo: 1},
		{name: "spread out", adm: []admission{at(0, 1), at(2000, 2001), at(4000, 4001)}, w: time.Second, hi: 1, lo: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hi, lo := busiest(tc.adm, tc.w)
			if hi != tc.hi || lo != tc.lo {
				t.Errorf("busiest = %d, %d; want %d, %d", hi, lo, tc.hi, tc.lo)
			}
		})
	}
}
