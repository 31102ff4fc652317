package devstack_test

// The hostile-traffic suite of issue #14: each test is an attack reproduced
// against the dev stack with the shipped configs (envoy/envoy.yaml,
// config/ratelimit/tiers.yaml), clients dialling from distinct loopback
// addresses (127.0.0.x) so that per-address limits are what production
// sees. docs/reliability.md lists each attack with its result.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// from is an HTTP client whose connections leave from ip (127.0.0.x).
type from struct {
	ip     string
	client *http.Client
}

func (s *stack) from(t *testing.T, ip string) *from {
	t.Helper()
	tr := &http.Transport{
		DialContext:        (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &from{ip: ip, client: &http.Client{Timeout: 10 * time.Second, Transport: tr}}
}

func (c *from) do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, url, c.ip, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// batchOf is a batch of n GETs of distinct paths under prefix, each asking
// the origin (no-cache), so that every item is rate limited.
func batchOf(prefix string, n int) string {
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`{"id":"%d","method":"GET","url":"/api/v1/%s/%d","headers":{"cache-control":"no-cache"}}`, i, prefix, i))
	}
	return `{"requests":[` + strings.Join(items, ",") + `]}`
}

func (c *from) batch(t *testing.T, s *stack, body string, hdr ...string) batchResponse {
	t.Helper()
	resp, b := c.do(t, "POST", s.URL()+"/api/v1/batch", body, append([]string{"content-type", "application/json"}, hdr...)...)
	var out batchResponse
	if err := json.Unmarshal([]byte(b), &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("batch from %s: %d %q", c.ip, resp.StatusCode, b)
	}
	return out
}

func statuses(out batchResponse) map[int]int {
	n := map[int]int{}
	for _, r := range out.Responses {
		n[r.Status]++
	}
	return n
}

// TestHostileBatchItemsLimitedAsTheirClient: batch items re-enter Envoy
// from Sluice's socket, so before the internal listener they were all
// limited as Sluice's own address: an anonymous client over its limit got
// 20×200 through a batch, and fresh clients got 20×429 for a bucket others
// had filled. Now every item is limited as the client that sent the batch
// (anonymous: 60 per minute per address), and the origin sees that client.
func TestHostileBatchItemsLimitedAsTheirClient(t *testing.T) {
	s := start(t, echo(t).URL, true, nil)
	filler, fresh := s.from(t, "127.0.0.31"), s.from(t, "127.0.0.32")

	// The filler spends its whole anonymous quota on items: 3 × 20.
	for i := range 3 {
		if got := statuses(filler.batch(t, s, batchOf(fmt.Sprintf("fill%d", i), 20))); got[200] != 20 {
			t.Fatalf("filler batch %d: statuses %v; want 20×200 (its own 60 per minute)", i, got)
		}
	}
	// Over its limit, its items are refused like its direct calls.
	if got := statuses(filler.batch(t, s, batchOf("over", 20))); got[429] != 20 {
		t.Errorf("filler over its limit: item statuses %v; want 20×429", got)
	}
	if resp, _ := filler.do(t, "GET", s.URL()+"/api/v1/direct", "", "cache-control", "no-cache"); resp.StatusCode != 429 {
		t.Errorf("filler direct call: %d; want 429", resp.StatusCode)
	}
	// A fresh client is not charged for what the filler did.
	out := fresh.batch(t, s, batchOf("fresh", 20), "x-forwarded-for", "203.0.113.50")
	if got := statuses(out); got[200] != 20 {
		t.Fatalf("fresh client's batch: statuses %v; want 20×200", got)
	}
	// The origin sees the fresh client: the same XFF and external address
	// as on its direct call, and none of Sluice's headers but the ones ext_proc sets.
	_, direct := fresh.do(t, "GET", s.URL()+"/api/v1/direct", "", "x-forwarded-for", "203.0.113.50")
	want := upstreamSaw(t, direct)
	var item http.Header
	if err := json.Unmarshal(out.Responses[0].Body, &item); err != nil {
		t.Fatalf("item body %s: %v", out.Responses[0].Body, err)
	}
	for _, h := range []string{"X-Forwarded-For", "X-Envoy-External-Address", "X-Forwarded-Proto"} {
		if got, w := item.Get(h), want.Get(h); got != w || w == "" {
			t.Errorf("origin saw %s %q on an item, %q on a direct call", h, got, w)
		}
	}
	if got := item.Get("X-Envoy-External-Address"); got != fresh.ip {
		t.Errorf("origin saw the item's client as %q; want %s", got, fresh.ip)
	}
	for _, h := range []string{"X-Sluice-Batch", "X-Sluice-Client-Address", "X-Sluice-Warm"} {
		if v := item.Get(h); v != "" {
			t.Errorf("origin saw %s: %q", h, v)
		}
	}
}
