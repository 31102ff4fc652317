package limiter_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// BenchmarkHotKeyCluster sends one key's decisions from three replicas (three Limiters, each
// with its own cluster client) to a three-master Redis Cluster at a fixed rate, and reports
// the CPU the master owning the key spends on them, in exact mode, in lease mode, and with
// LeaseWhenHot (exact until the key is found hot). It runs for a fixed time whatever b.N: use
// -benchtime=1x (bench/ratelimit-hotkey.sh does). HOTKEY_RATE (decisions per second in all,
// default 50000) and HOTKEY_DURATION (per mode, default 10s) change the run.
//
// The load comes from this process, not through gRPC: 50k decisions per second is more than
// the gRPC path reaches on a small machine, and the question is what the shard spends.
func BenchmarkHotKeyCluster(b *testing.B) {
	rate := envInt(b, "HOTKEY_RATE", 50_000)
	dur := envDuration(b, "HOTKEY_DURATION", 10*time.Second)
	cl := redistest.StartCluster(b)
	const tag = "hot-tenant"
	owner := 0
	for i, r := range [3][2]uint16{{0, 5460}, {5461, 10922}, {10923, 16383}} {
		if s := limiter.Slot(tag); s >= r[0] && s <= r[1] {
			owner = i
		}
	}
	for _, mode := range []limiter.Mode{limiter.Exact, limiter.Lease, limiter.LeaseWhenHot} {
		b.Run(mode.String(), func(b *testing.B) {
			item := limiter.Item{
				Key: "bench:" + mode.String() + ":{" + tag + "}", Limit: 1_000_000_000, Window: time.Minute, Hits: 1, Mode: mode,
			}
			var replicas [3]*limiter.Limiter
			for i := range replicas {
				replicas[i] = newLimiter(b, cl.Client(b), limiter.Config{Timeout: time.Second})
			}
			// Warm up: the script loaded on the master, the first leases taken, the key found hot.
			drive(b, replicas[:], item, rate, 2*time.Second)
			cpu0 := procCPU(b, cl.Node(owner).PID())
			start := time.Now()
			done, failed := drive(b, replicas[:], item, rate, dur)
			el := time.Since(start)
			cpu := procCPU(b, cl.Node(owner).PID()) - cpu0
			b.ReportMetric(float64(done)/el.Seconds(), "decisions/s")
			b.ReportMetric(100*cpu.Seconds()/el.Seconds(), "shard_cpu_%")
			b.ReportMetric(float64(cpu.Microseconds())/float64(max(done, 1)), "shard_µs/decision")
			b.ReportMetric(float64(failed), "errors")
			b.Logf("%s: %d decisions in %v (%.0f/s, %d failed); master %d (owning slot %d) busy %.1f%% of a core",
				mode, done, el.Round(time.Millisecond), float64(done)/el.Seconds(), failed, owner, limiter.Slot(tag), 100*cpu.Seconds()/el.Seconds())
		})
	}
}

// drive sends rate decisions per second for dur, split over the replicas, from 16 callers per
// replica each on its own schedule, and returns the decisions answered and failed. A caller
// behind its schedule sends at once: when the replicas cannot keep up, the rate is what they
// reach.
func drive(b *testing.B, replicas []*limiter.Limiter, item limiter.Item, rate int, dur time.Duration) (done, failed int64) {
	const callers = 16
	var (
		wg          sync.WaitGroup
		nDone, nErr atomic.Int64
		start       = time.Now()
		every       = time.Duration(float64(time.Second) * float64(callers*len(replicas)) / float64(rate))
	)
	for _, l := range replicas {
		for c := range callers {
			wg.Go(func() {
				next := start.Add(every * time.Duration(c) / callers)
				for time.Since(start) < dur {
					time.Sleep(time.Until(next))
					next = next.Add(every)
					if _, _, err := l.Do(context.Background(), []limiter.Item{item}); err != nil {
						nErr.Add(1)
						continue
					}
					nDone.Add(1)
				}
			})
		}
	}
	wg.Wait()
	return nDone.Load(), nErr.Load()
}

// procCPU returns the user and system CPU time of process pid so far (/proc/PID/stat, clock
// ticks of 10ms).
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("CPU time of redis-server %d: %v", pid, err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
