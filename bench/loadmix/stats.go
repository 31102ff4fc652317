package main

import (
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"time"
)

// histogram records durations in fixed memory: log-linear buckets with 32
// sub-buckets per power of two, so a reported percentile is within about 3%
// of the true value however long the run. The zero value is ready to use;
// not safe for concurrent use (each worker owns one and they are merged).
type histogram struct {
	counts [2048]uint64
	n      uint64
}

const subBits = 5 // 32 sub-buckets per power of two

func bucketOf(ns uint64) int {
	if ns < 2<<subBits {
		return int(ns)
	}
	e := bits.Len64(ns) - subBits - 1 // ns>>e is in [32, 63]
	return (2 << subBits) + (e-1)<<subBits + int(ns>>e) - 1<<subBits
}

// upperOf is the largest value that falls in bucket b.
func upperOf(b int) uint64 {
	if b < 2<<subBits {
		return uint64(b)
	}
	b -= 2 << subBits
	e := b>>subBits + 1
	m := uint64(b&(1<<subBits-1)) + 1<<subBits
	return (m+1)<<e - 1
}

func (h *histogram) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	b := bucketOf(uint64(d))
	if b >= len(h.counts) {
		b = len(h.counts) - 1
	}
	h.counts[b]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the upper bound of the bucket holding quantile q, 0 when
// empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(upperOf(b))
		}
	}
	return time.Duration(upperOf(len(h.counts) - 1))
}

// Request classes of the mix.
const (
	classGet = iota
	classWrite
	classBatch
	classAnon
	numClasses
)

var classNames = [numClasses]string{"get", "write", "batch", "anon"}

// stats is what one worker saw in one phase. Merged with add at the end.
// Maps are bounded: status codes, x-cache values and error kinds.
type stats struct {
	lat        [numClasses]histogram
	all        histogram
	status     map[int]int
	classOK    [numClasses]int // 2xx answers per class
	errs       map[string]int  // Sluice-side failures by kind
	upstream5  int             // 5xx that came from the upstream (not errors)
	anonBypass int             // anonymous GETs ext_proc did not process (same answer; not errors)
	xcache     map[string]int  // x-cache of get and anon answers ("none" when absent)
	items      map[int]int     // batch item statuses
	itemCache  map[string]int  // x-cache of batch items
	examples   []string        // a few errors and unexpected statuses
}

func newStats() *stats {
	return &stats{status: map[int]int{}, errs: map[string]int{}, xcache: map[string]int{}, items: map[int]int{}, itemCache: map[string]int{}}
}

// maxExamples bounds stats.examples.
const maxExamples = 8

// fail counts an error of kind and keeps what as an example.
func (s *stats) fail(kind, what string) {
	s.errs[kind]++
	s.note(kind + ": " + what)
}

// note keeps an example of an answer worth a look (errors, and 4xx other
// than 429: the mix sends only requests the demo API should accept).
func (s *stats) note(what string) {
	if len(s.examples) < maxExamples {
		s.examples = append(s.examples, what)
	}
}

func (s *stats) add(o *stats) {
	for i := range s.lat {
		s.lat[i].merge(&o.lat[i])
		s.classOK[i] += o.classOK[i]
	}
	s.all.merge(&o.all)
	s.upstream5 += o.upstream5
	s.anonBypass += o.anonBypass
	addMap(s.status, o.status)
	addMap(s.errs, o.errs)
	addMap(s.xcache, o.xcache)
	addMap(s.items, o.items)
	addMap(s.itemCache, o.itemCache)
	if n := maxExamples - len(s.examples); n > 0 {
		s.examples = append(s.examples, o.examples[:min(n, len(o.examples))]...)
	}
}

func addMap[K comparable](dst, src map[K]int) {
	for k, v := range src {
		dst[k] += v
	}
}

func (s *stats) errors() int {
	n := 0
	for _, v := range s.errs {
		n += v
	}
	return n
}

func (s *stats) ok() int {
	n := 0
	for _, v := range s.classOK {
		n += v
	}
	return n
}

// line is one result row in key=value form, the format bench/rlsload uses.
func line(phase, class string, h *histogram, ok int, secs float64) string {
	return fmt.Sprintf("%-8s %-6s reqs=%d req/s=%.0f 2xx/s=%.0f p50=%v p95=%v p99=%v",
		phase, class, h.n, float64(h.n)/secs, float64(ok)/secs, round(h.quantile(.50)), round(h.quantile(.95)), round(h.quantile(.99)))
}

func (s *stats) print(phase string, secs float64) {
	fmt.Printf("%s errors=%d\n", line(phase, "total", &s.all, s.ok(), secs), s.errors())
	for c := range numClasses {
		if s.lat[c].n > 0 {
			fmt.Println(line(phase, classNames[c], &s.lat[c], s.classOK[c], secs))
		}
	}
	fmt.Printf("  statuses: %s\n", formatInts(s.status))
	fmt.Printf("  errors: %d %s (upstream 5xx, not counted: %d)\n", s.errors(), formatStrings(s.errs), s.upstream5)
	if s.errs["unenriched"]+s.errs["unenriched_item"]+s.errs["batch_forwarded"]+s.anonBypass > 0 {
		fmt.Printf("    unenriched, unenriched_item, batch_forwarded: ext_proc failed open (failure_mode_allow) and the app saw no tenant; anonymous GETs so served, not counted: %d\n", s.anonBypass)
	}
	for _, e := range s.examples {
		fmt.Printf("    e.g. %s\n", e)
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 100*time.Microsecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func formatInts(m map[int]int) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(k) + "=" + strconv.Itoa(m[k]))
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

func formatStrings(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "=" + strconv.Itoa(m[k]))
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// shares prints counts with their share of the total, largest first.
func shares(m map[string]int) string {
	total := 0
	keys := make([]string, 0, len(m))
	for k, v := range m {
		total += v
		keys = append(keys, k)
	}
	if total == 0 {
		return "-"
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d(%.1f%%)", k, m[k], 100*float64(m[k])/float64(total))
	}
	return b.String()
}
