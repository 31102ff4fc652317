package devstack_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type batchResponse struct {
	Responses []struct {
		ID      string            `json:"id"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"responses"`
	Error *struct{ Code, Message string } `json:"error"`
}

func (s *stack) batch(t *testing.T, body string, hdr ...string) (int, batchResponse) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL()+"/api/v1/batch", strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out batchResponse
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("batch reply %d %q: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, out
}

// TestBatchThroughGateway: a batch's items go back through the gateway, so
// each one is enriched, rate limited and cached like a direct call.
func TestBatchThroughGateway(t *testing.T) {
	s := start(t, "", true, nil) // the built-in demo API

	// Dependencies, a cached item and a bad item in one batch.
	status, out := s.batch(t, `{"requests":[
		{"id":"1","method":"GET","url":"/api/v1/contacts/1"},
		{"id":"2","method":"GET","url":"/api/v1/contacts/1","dependsOn":["1"]},
		{"id":"3","method":"GET","url":"/api/v1/contacts/999999"},
		{"id":"4","method":"GET","url":"/api/v1/dashboard/stats","dependsOn":["3"]},
		{"id":"5","method":"GET","url":"http://169.254.169.254/latest/meta-data"}
	]}`, "x-tenant-id", "acme")
	if status != 200 || len(out.Responses) != 5 {
		t.Fatalf("batch: %d %+v", status, out)
	}
	byID := map[string]int{}
	for i, r := range out.Responses {
		byID[r.ID] = i
	}
	want := map[string]int{"1": 200, "2": 200, "3": 404, "4": 424, "5": 400}
	for id, code := range want {
		if got := out.Responses[byID[id]].Status; got != code {
			t.Errorf("item %s: status %d, want %d (%s)", id, got, code, out.Responses[byID[id]].Body)
		}
	}
	if !strings.Contains(string(out.Responses[byID["1"]].Body), `@acme.example`) {
		t.Errorf("item 1 body is not acme's contact: %s", out.Responses[byID["1"]].Body)
	}
	if got := out.Responses[byID["2"]].Headers["x-cache"]; !strings.HasPrefix(got, "HIT") {
		t.Errorf("item 2 (same URL after item 1) x-cache = %q, want a cache hit", got)
	}

	// Each item is rate limited on its own: initech (free) has 10 per second. A 200 without
	// ratelimit-policy was not decided by Sluice (the ratelimit filter's 20ms budget ran out and
	// it failed open, as Envoy does, which a loaded -race run can cause); such a round proves
	// nothing and runs again once the window has passed.
	for round := 1; ; round++ {
		// New URLs each round: a cache hit would bypass the ratelimit filter.
		var items []string
		for i := 0; i < 14; i++ {
			items = append(items, fmt.Sprintf(`{"id":"%d","method":"GET","url":"/api/v1/dashboard/stats?round=%d&n=%d"}`, i, round, i))
		}
		status, out = s.batch(t, `{"requests":[`+strings.Join(items, ",")+`]}`, "x-tenant-id", "initech")
		if status != 200 {
			t.Fatalf("batch: %d %+v", status, out)
		}
		limited, undecided := 0, 0
		for _, r := range out.Responses {
			switch {
			case r.Status == 429:
				limited++
			case r.Headers["ratelimit-policy"] == "":
				undecided++
			}
		}
		if undecided > 0 && round < 5 {
			t.Logf("round %d: %d of 14 items failed open; again", round, undecided)
			time.Sleep(1100 * time.Millisecond)
			continue
		}
		if limited == 0 {
			t.Errorf("14 items of a free tenant: none rate limited (%d failed open)", undecided)
		}
		break
	}

	tests := []struct {
		name string
		body string
		hdr  []string
		want string
	}{
		{"malformed", `{"requests":[`, nil, "400"},
		{"duplicate ids", `{"requests":[{"id":"a","method":"GET","url":"/api/v1/x"},{"id":"a","method":"GET","url":"/api/v1/y"}]}`, nil, "400"},
		{"cyclic", `{"requests":[{"id":"a","method":"GET","url":"/api/v1/x","dependsOn":["b"]},{"id":"b","method":"GET","url":"/api/v1/y","dependsOn":["a"]}]}`, nil, "400"},
		{"too many", `{"requests":[` + strings.Repeat(`{"id":"x","method":"GET","url":"/api/v1/x"},`, 20) + `{"id":"y","method":"GET","url":"/api/v1/x"}]}`, nil, "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := s.batch(t, tt.body, append([]string{"x-tenant-id", "acme"}, tt.hdr...)...)
			if fmt.Sprint(status) != tt.want || out.Error == nil || out.Error.Message == "" {
				t.Fatalf("got %d %+v, want %s with a JSON error", status, out, tt.want)
			}
		})
	}
	// A client's own x-sluice-batch never reaches Sluice (Envoy strips it:
	// internal_only_headers), so it cannot make Sluice refuse a batch, nor
	// pass its request off as one of Sluice's items.
	status, out = s.batch(t, `{"requests":[{"id":"a","method":"GET","url":"/api/v1/contacts/1"}]}`, "x-tenant-id", "acme", "x-sluice-batch", "1")
	if status != 200 || len(out.Responses) != 1 || out.Responses[0].Status != 200 {
		t.Fatalf("batch with a client's x-sluice-batch: %d %+v; want it run like any batch", status, out)
	}
}
