// Command rlsload drives ShouldRateLimit calls at one or more RateLimitService
// servers for a fixed time and prints decisions/s and latency percentiles on
// one line, for comparison between servers measured in the same run.
//
// By default it runs closed-loop: -c callers each send their next call as
// soon as the last one is answered. With -rate it runs open-loop instead, at
// that many calls per second in all, and with -window it reports how many
// calls were admitted in the busiest span of that length, for accuracy runs
// against a known limit (-limit).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// admission is one admitted call: it was decided between sent and answered.
type admission struct{ sent, answered time.Time }

func main() {
	var (
		addrs    = flag.String("addr", "127.0.0.1:8081", "RateLimitService address, or several separated by commas (calls go round-robin)")
		label    = flag.String("label", "", "name printed on the result line")
		domain   = flag.String("domain", "bench", "rate limit domain")
		descs    = flag.Int("descriptors", 1, "descriptors per request (1..8)")
		conc     = flag.Int("c", 32, "concurrent callers")
		conns    = flag.Int("conns", 4, "gRPC connections per address (callers are spread over them)")
		dur      = flag.Duration("d", 5*time.Second, "measurement time (after the warm-up)")
		tenants  = flag.Int("tenants", 1000, "distinct tenant values (spreads keys like real traffic); 1 for one hot key")
		warm     = flag.Duration("warmup", time.Second, "warm-up time, not measured")
		rpcLimit = flag.Duration("timeout", time.Second, "per-call timeout")
		pids     = flag.String("pids", "", "name=pid,... of processes whose CPU time and read/write system calls per call to report (Linux /proc), e.g. server=123,redis=456")
		rate     = flag.Float64("rate", 0, "calls per second in all, sent open-loop by the -c callers (0: closed loop, as fast as answered)")
		window   = flag.Duration("window", 0, "report the most calls admitted within any span of this length (accuracy runs)")
		limit    = flag.Int("limit", 0, "with -window: the limit per window, to print the busiest window as a ratio of it")
		cpuProf  = flag.String("cpuprofile", "", "write the load generator's own CPU profile of the measured time to this file")
	)
	flag.Parse()
	if *descs < 1 || *descs > 8 || *conc < 1 || *conns < 1 || *tenants < 1 || *rate < 0 {
		log.Fatal("rlsload: bad flags")
	}
	var clients []rlsv3.RateLimitServiceClient
	for _, addr := range strings.Split(*addrs, ",") {
		for range *conns {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				log.Fatal(err)
			}
			defer cc.Close()
			clients = append(clients, rlsv3.NewRateLimitServiceClient(cc))
		}
	}
	keys := []string{"tenant_id", "user_id", "remote_address", "k3", "k4", "k5", "k6", "k7"}
	mkReq := func(n int) *rlsv3.RateLimitRequest {
		req := &rlsv3.RateLimitRequest{Domain: *domain}
		for d := 0; d < *descs; d++ {
			req.Descriptors = append(req.Descriptors, &commonrl.RateLimitDescriptor{Entries: []*commonrl.RateLimitDescriptor_Entry{
				{Key: "tier", Value: "pro"},
				{Key: keys[d], Value: fmt.Sprintf("v%d", n%*tenants)},
			}})
		}
		return req
	}

	var (
		mu       sync.Mutex
		lat      []time.Duration
		admitted []admission
		errs     int
		over     int
		start    = time.Now()
		measure  = start.Add(*warm)
		stop     = measure.Add(*dur)
		wg       sync.WaitGroup
	)
	// With -rate, ticket n may be sent at start + n/rate: a caller takes the next ticket and
	// waits for its time, so calls keep their schedule while callers are free.
	var (
		ticketMu sync.Mutex
		ticket   int
	)
	nextSlot := func() (int, time.Time) {
		ticketMu.Lock()
		defer ticketMu.Unlock()
		n := ticket
		ticket++
		return n, start.Add(time.Duration(float64(n) / *rate * float64(time.Second)))
	}
	for w := 0; w < *conc; w++ {
		wg.Go(func() {
			c := clients[w%len(clients)]
			local := make([]time.Duration, 0, 1<<16)
			var localAdm []admission
			var le, lo int
			for n := w; ; n += *conc {
				if *rate > 0 {
					var at time.Time
					n, at = nextSlot()
					if at.After(stop) {
						break
					}
					time.Sleep(time.Until(at))
					c = clients[n%len(clients)]
				}
				sent := time.Now()
				if sent.After(stop) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), *rpcLimit)
				resp, err := c.ShouldRateLimit(ctx, mkReq(n))
				cancel()
				answered := time.Now()
				if sent.Before(measure) {
					continue
				}
				switch {
				case err != nil:
					le++
				case resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT:
					lo++
				case *window > 0:
					localAdm = append(localAdm, admission{sent, answered})
				}
				local = append(local, answered.Sub(sent))
			}
			mu.Lock()
			lat = append(lat, local...)
			admitted = append(admitted, localAdm...)
			errs += le
			over += lo
			mu.Unlock()
		})
	}
	// CPU accounting over the measured window only: the servers' from /proc, the load
	// generator's own from getrusage. Per call, it is comparable across runs even when the
	// machine is noisy, where decisions/s is not.
	watched, err := parsePids(*pids)
	if err != nil {
		log.Fatal(err)
	}
	time.Sleep(time.Until(measure))
	self := proc{"loadgen", os.Getpid()}
	cpu0, self0, io0 := cpuTimes(watched), selfCPU(), ioCalls(append(watched, self))
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
	}
	time.Sleep(time.Until(stop))
	if *cpuProf != "" {
		pprof.StopCPUProfile()
	}
	cpu1, self1, io1 := cpuTimes(watched), selfCPU(), ioCalls(append(watched, self))
	wg.Wait()
	if len(lat) == 0 {
		fmt.Fprintln(os.Stderr, "rlsload: no calls completed")
		os.Exit(1)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("%-28s descriptors=%d c=%d calls=%d decisions/s=%.0f p50=%v p99=%v errors=%d over_limit=%d\n",
		*label, *descs, *conc, len(lat), float64(len(lat))/dur.Seconds(), pct(0.50), pct(0.99), errs, over)
	if len(watched) > 0 {
		perCall := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(len(lat)) }
		line := fmt.Sprintf("%-28s cpu_us_per_call:", "")
		total := 0.0
		for i, p := range watched {
			v := perCall(cpu1[i] - cpu0[i])
			total += v
			line += fmt.Sprintf(" %s=%.1f", p.name, v)
		}
		v := perCall(self1 - self0)
		total += v
		fmt.Printf("%s loadgen=%.1f total=%.1f\n", line, v, total)
		// Read and write system calls per call: on loopback each write also delivers the data
		// and wakes the reader, so they are much of the CPU per call a server adds.
		line = fmt.Sprintf("%-28s syscalls_per_call (read/write):", "")
		for i, p := range append(watched, self) {
			line += fmt.Sprintf(" %s=%.2f/%.2f", p.name, float64(io1[i][0]-io0[i][0])/float64(len(lat)), float64(io1[i][1]-io0[i][1])/float64(len(lat)))
		}
		fmt.Println(line)
	}
	if *window > 0 {
		hi, lo := busiest(admitted, *window)
		line := fmt.Sprintf("%-28s admitted=%d busiest_%v: at_most=%d at_least=%d", "", len(admitted), *window, hi, lo)
		if *limit > 0 {
			line += fmt.Sprintf(" limit=%d at_most/limit=%.4f", *limit, float64(hi)/float64(*limit))
		}
		fmt.Println(line)
	}
}

// busiest bounds the most admissions the server decided within any span of length w. Each was
// decided at some moment between its sent and answered times, so a span holds at most the
// admissions whose interval meets it (hi) and at least those whose interval lies inside it
// (lo); the true busiest span lies between.
func busiest(adm []admission, w time.Duration) (hi, lo int) {
	if len(adm) == 0 {
		return 0, 0
	}
	sent := make([]time.Time, len(adm))
	answered := make([]time.Time, len(adm))
	for i, a := range adm {
		sent[i], answered[i] = a.sent, a.answered
	}
	slices.SortFunc(sent, time.Time.Compare)
	slices.SortFunc(answered, time.Time.Compare)
	// hi: for a span [t, t+w] starting at an answered time, the intervals meeting it are those
	// sent by t+w, less those answered before t. The maximum is reached at such a start.
	j, k := 0, 0
	for i, t := range answered {
		for j < len(sent) && !sent[j].After(t.Add(w)) {
			j++
		}
		for k < i && answered[k].Before(t) {
			k++
		}
		hi = max(hi, j-k)
	}
	// lo: intervals inside [t, t+w] for t at a sent time: sent at or after t and answered by
	// t+w; sorted by sent, a sliding scan over the admissions.
	byStart := slices.Clone(adm)
	slices.SortFunc(byStart, func(a, b admission) int { return a.sent.Compare(b.sent) })
	for i, a := range byStart {
		end := a.sent.Add(w)
		n := 0
		for _, b := range byStart[i:] {
			if b.sent.After(end) {
				break
			}
			if !b.answered.After(end) {
				n++
			}
		}
		lo = max(lo, n)
	}
	return hi, lo
}

type proc struct {
	name string
	pid  int
}

func parsePids(s string) ([]proc, error) {
	var out []proc
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		name, pid, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 {
			return nil, fmt.Errorf("rlsload: -pids: %q is not name=pid", f)
		}
		out = append(out, proc{name, n})
	}
	return out, nil
}

// cpuTimes returns the user+system CPU time of each process so far, from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s: USER_HZ is 100 on Linux). A process that
// cannot be read counts as 0.
func cpuTimes(ps []proc) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces: fields are counted after its ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		out[i] = time.Duration(u+s) * 10 * time.Millisecond
	}
	return out
}

// ioCalls returns the read and write system calls of each process so far (syscr and syscw of
// /proc/PID/io: reads and writes of any file, sockets included). A process that cannot be
// read counts as 0.
func ioCalls(ps []proc) [][2]int64 {
	out := make([][2]int64, len(ps))
	for i, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "syscr":
				out[i][0] = n
			case "syscw":
				out[i][1] = n
			}
		}
	}
	return out
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
