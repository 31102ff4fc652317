package batch

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkFanOut measures a batch of 20 items, each 10 ms upstream,
// against a batch of one such item in the same run, and reports the ratio
// (target ≤ 1.5 with concurrency 20; concurrency 5 runs 4 waves, ≈ 4).
func BenchmarkFanOut(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	item := func(i int) string { return fmt.Sprintf(`{"id":"%d","method":"GET","url":"/api/v1/x/%d"}`, i, i) }
	batchOf := func(n int) []byte {
		items := make([]string, n)
		for i := range items {
			items[i] = item(i)
		}
		return []byte(`{"requests":[` + strings.Join(items, ",") + `]}`)
	}
	one, twenty := batchOf(1), batchOf(20)
	for _, conc := range []int{20, 5} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			r, err := New(Config{ListenerURL: srv.URL, Concurrency: conc})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			ctx := context.Background()
			var single, batch time.Duration
			for b.Loop() {
				t0 := time.Now()
				if s, _ := r.Handle(ctx, Parent{}, one); s != http.StatusOK {
					b.Fatalf("status %d", s)
				}
				t1 := time.Now()
				if s, _ := r.Handle(ctx, Parent{}, twenty); s != http.StatusOK {
					b.Fatalf("status %d", s)
				}
				single += t1.Sub(t0)
				batch += time.Since(t1)
			}
			b.ReportMetric(float64(single.Microseconds())/float64(b.N)/1000, "single-ms")
			b.ReportMetric(float64(batch.Microseconds())/float64(b.N)/1000, "batch20-ms")
			b.ReportMetric(float64(batch)/float64(single), "ratio")
		})
	}
}

// BenchmarkParse measures parsing and validating a full 20-item batch.
func BenchmarkParse(b *testing.B) {
	var items []string
	for i := range 20 {
		items = append(items, fmt.Sprintf(`{"id":"%d","method":"POST","url":"/api/v1/users/%d?expand=a,b","headers":{"content-type":"application/json"},"body":{"name":"n%d","tags":["a","b"]},"dependsOn":[]}`, i, i, i))
	}
	body := []byte(`{"requests":[` + strings.Join(items, ",") + `]}`)
	p := testParser()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := p.Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}
