package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads url (an admin /metrics) in the text format. Only the names
// in want are kept.
func scrape(ctx context.Context, client *http.Client, url string, want ...string) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	// The plain text format: no OpenMetrics negotiation.
	req.Header.Set("Accept", "text/plain")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, resp.StatusCode)
	}
	return parseText(resp.Body, want)
}

func parseText(r io.Reader, want []string) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		name := l
		if i := strings.IndexAny(l, "{ "); i >= 0 {
			name = l[:i]
		}
		if !contains(want, name) {
			continue
		}
		s := sample{name: name, labels: map[string]string{}}
		rest := l[len(name):]
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("metrics: bad line %q", l)
			}
			parseLabels(rest[1:end], s.labels)
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", l)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: value in %q: %w", l, err)
		}
		s.value = v
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: read: %w", err)
	}
	return out, nil
}

// parseLabels reads `a="x",b="y"` (values with \" \\ \n escapes).
func parseLabels(s string, into map[string]string) {
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return
		}
		key := strings.TrimSpace(strings.TrimPrefix(s[:eq], ","))
		var v strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				if s[i] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(s[i])
		}
		into[key] = v.String()
		s = s[min(i+1, len(s)):]
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sumBy sums the series of name by the value of label.
func sumBy(ss []sample, name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		if s.name == name {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

// delta is after minus before, per key; keys that did not move are left out.
func delta(before, after map[string]float64) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = int(d)
		}
	}
	return out
}

// value returns the first sample of name, or false.
func value(ss []sample, name string) (float64, bool) {
	for _, s := range ss {
		if s.name == name {
			return s.value, true
		}
	}
	return 0, false
}

// bucketQuantile reads quantile q from cumulative histogram bucket counts
// keyed by their le bound, as the upper bound of the bucket holding it.
func bucketQuantile(buckets map[string]int, q float64) string {
	type b struct {
		le    float64
		count int
	}
	var bs []b
	total := 0
	for le, n := range buckets {
		v, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		bs = append(bs, b{v, n})
		if le == "+Inf" {
			total = n
		}
	}
	if total == 0 {
		return "-"
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	rank := q * float64(total)
	for _, x := range bs {
		if float64(x.count) >= rank {
			if math.IsInf(x.le, 1) {
				return "+Inf"
			}
			return time.Duration(x.le * float64(time.Second)).String()
		}
	}
	return "+Inf"
}
