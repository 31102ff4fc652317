package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// point is one memory sample of the process under test.
type point struct {
	at         time.Duration // since the soak started
	goroutines int
	heapInuse  float64 // bytes, as found (garbage included)
	liveHeap   float64 // bytes allocated right after a forced GC
	rss        float64 // bytes, VmRSS
	reqPerSec  float64 // over the interval before the sample
}

// sampler reads the process under test.
type sampler interface {
	sample(ctx context.Context) (point, error)
	describe() string
}

// selfSampler samples this process: the in-process devstack together with
// the load generator driving it.
type selfSampler struct{}

func (selfSampler) describe() string {
	return fmt.Sprintf("this process (pid %d): the in-process devstack AND the load generator", os.Getpid())
}

func (selfSampler) sample(context.Context) (point, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := point{goroutines: runtime.NumGoroutine(), heapInuse: float64(ms.HeapInuse)}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	p.liveHeap = float64(ms.HeapAlloc)
	rss, err := vmRSS("/proc/self/status")
	p.rss = rss
	return p, err
}

// procSampler samples another Sluice process: RSS from /proc, goroutines and
// heap from its admin /metrics, live heap from its pprof endpoint with gc=1
// (net/http/pprof runs runtime.GC before writing the heap profile, whose
// debug=1 form ends with the runtime.MemStats read after it).
type procSampler struct {
	pid    int
	admin  string
	client *http.Client
}

func (p procSampler) describe() string {
	return fmt.Sprintf("pid %d (admin %s): the Sluice process alone; the load generator runs apart", p.pid, p.admin)
}

func (p procSampler) sample(ctx context.Context) (point, error) {
	var pt point
	rss, err := vmRSS(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return pt, err
	}
	pt.rss = rss
	ss, err := scrape(ctx, p.client, p.admin+"/metrics", "go_goroutines", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return pt, err
	}
	g, ok1 := value(ss, "go_goroutines")
	h, ok2 := value(ss, "go_memstats_heap_inuse_bytes")
	if !ok1 || !ok2 {
		return pt, fmt.Errorf("sample: %s/metrics lacks go_goroutines or go_memstats_heap_inuse_bytes", p.admin)
	}
	pt.goroutines, pt.heapInuse = int(g), h
	pt.liveHeap, err = gcHeap(ctx, p.client, p.admin)
	return pt, err
}

// gcHeap forces a GC in the process behind admin and returns its HeapAlloc.
func gcHeap(ctx context.Context, client *http.Client, admin string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/debug/pprof/heap?gc=1&debug=1", nil)
	if err != nil {
		return 0, fmt.Errorf("gc heap: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("gc heap: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("gc heap: status %d", resp.StatusCode)
	}
	return memStat(resp.Body, "HeapAlloc")
}

// memStat finds "# name = value" in a debug=1 heap profile.
func memStat(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	prefix := "# " + name + " = "
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("heap profile %s: %w", name, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("heap profile: %w", err)
	}
	return 0, fmt.Errorf("heap profile has no %s line", name)
}

// vmRSS reads VmRSS (kB) from a /proc/PID/status file, in bytes.
func vmRSS(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, fmt.Errorf("rss: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("rss: no VmRSS in %s", path)
}

// soakRules are the pass/fail thresholds.
type soakRules struct {
	warmFrac      float64       // leading share of the run left out of the verdicts
	goroutineTol  int           // goroutine growth allowed
	heapGrowthPct float64       // fitted live-heap growth over the window allowed, % of its start
	minR2         float64       // fit quality above which a growth counts as steady
	idleWait      time.Duration // quiet time before the idle-after sample
}

const mb = 1 << 20

// verdict prints the series after the warm-up and the verdicts, and
// reports whether the run passed.
func verdict(series []point, idleBefore, idleAfter point, haveIdle bool, d time.Duration, r soakRules) bool {
	fmt.Println("\n== samples (t, goroutines, live heap after GC MB, heap in use MB, RSS MB, req/s over the interval)")
	warm := time.Duration(float64(d) * r.warmFrac)
	var post []point
	for _, p := range series {
		mark := " "
		if p.at >= warm {
			post = append(post, p)
		} else {
			mark = "w" // warm-up, not judged
		}
		fmt.Printf("%s t=%-7v goroutines=%-6d live_heap=%-7.1f heap_inuse=%-7.1f rss=%-7.1f req/s=%.0f\n",
			mark, p.at.Round(time.Second), p.goroutines, p.liveHeap/mb, p.heapInuse/mb, p.rss/mb, p.reqPerSec)
	}
	if haveIdle {
		fmt.Printf("idle before load: goroutines=%d live_heap=%.1fMB rss=%.1fMB; idle %v after the load: goroutines=%d live_heap=%.1fMB rss=%.1fMB\n",
			idleBefore.goroutines, idleBefore.liveHeap/mb, idleBefore.rss/mb, r.idleWait, idleAfter.goroutines, idleAfter.liveHeap/mb, idleAfter.rss/mb)
	}
	fmt.Printf("\n== verdicts over %d samples after a warm-up of %v (%.0f%% of %v)\n", len(post), warm.Round(time.Second), 100*r.warmFrac, d)
	if len(post) < 5 {
		fmt.Println("FAIL: fewer than 5 samples after the warm-up; run longer or sample more often")
		return false
	}
	pass := true

	xs := make([]float64, len(post))
	g := make([]float64, len(post))
	for i, p := range post {
		xs[i] = p.at.Minutes()
		g[i] = float64(p.goroutines)
	}
	window := xs[len(xs)-1] - xs[0]
	q := max(1, len(post)/4)
	gslope, gr2 := regress(xs, g)
	gmin, gmax := minMax(g)
	gfit := gslope * window
	ok := !(gr2 >= r.minR2 && gfit > float64(r.goroutineTol))
	fmt.Printf("goroutines under load: min=%.0f max=%.0f max-min=%.0f (in-flight requests come and go); first-quarter median %.0f, last-quarter median %.0f; slope=%+.1f/min R²=%.2f, fitted growth over %.1f min = %+.1f\n",
		gmin, gmax, gmax-gmin, median(g[:q]), median(g[len(g)-q:]), gslope, gr2, window, gfit)
	fmt.Printf("  rule: FAIL when the fit is steady (R² ≥ %.2f) and its growth over the window exceeds %d → %s\n", r.minR2, r.goroutineTol, passFail(ok))
	pass = pass && ok
	if haveIdle {
		grew := idleAfter.goroutines - idleBefore.goroutines
		ok = grew <= r.goroutineTol
		fmt.Printf("goroutines idle: %d before the load, %d after it (%v without traffic): %+d\n", idleBefore.goroutines, idleAfter.goroutines, r.idleWait, grew)
		fmt.Printf("  rule: FAIL when idle goroutines grew by more than %d → %s\n", r.goroutineTol, passFail(ok))
		pass = pass && ok
	}

	hs := make([]float64, len(post))
	rs := make([]float64, len(post))
	for i, p := range post {
		hs[i] = p.liveHeap / mb
		rs[i] = p.rss / mb
	}
	slope, r2 := regress(xs, hs)
	hmin, hmax := minMax(hs)
	start := median(hs[:q])
	fitted := slope * window
	limit := math.Max(1, start*r.heapGrowthPct/100)
	steady := r2 >= r.minR2
	ok = !(steady && fitted > limit)
	fmt.Printf("live heap (after GC): slope=%+.3f MB/min R²=%.2f max/min=%.2f (%.1f..%.1f MB); fitted growth over %.1f min = %+.2f MB\n",
		slope, r2, hmax/hmin, hmin, hmax, window, fitted)
	fmt.Printf("  rule: FAIL when the fit is steady (R² ≥ %.2f) and its growth over the window exceeds max(1 MB, %.0f%% of the starting %.1f MB) = %.2f MB → %s\n",
		r.minR2, r.heapGrowthPct, start, limit, passFail(ok))
	pass = pass && ok

	rslope, rr2 := regress(xs, rs)
	rmin, rmax := minMax(rs)
	fmt.Printf("RSS: slope=%+.3f MB/min R²=%.2f max/min=%.2f (%.1f..%.1f MB) (informative: the runtime returns memory to the OS lazily)\n",
		rslope, rr2, rmax/rmin, rmin, rmax)
	hi, _ := regress(xs, heapInuse(post))
	fmt.Printf("heap in use (no forced GC): slope=%+.3f MB/min (informative: includes garbage awaiting the next GC)\n", hi)
	return pass
}

func heapInuse(ps []point) []float64 {
	out := make([]float64, len(ps))
	for i, p := range ps {
		out[i] = p.heapInuse / mb
	}
	return out
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(v []float64) (float64, float64) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// regress fits y = a + b·x by least squares and returns b and R².
func regress(x, y []float64) (slope, r2 float64) {
	n := float64(len(x))
	var sx, sy, sxx, sxy, syy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
		syy += y[i] * y[i]
	}
	vx := sxx - sx*sx/n
	vy := syy - sy*sy/n
	cov := sxy - sx*sy/n
	if vx == 0 {
		return 0, 0
	}
	slope = cov / vx
	if vy > 0 {
		r2 = cov * cov / (vx * vy)
	}
	return slope, r2
}
