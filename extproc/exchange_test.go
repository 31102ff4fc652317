package extproc

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/header"
)

func TestExchangeMutations(t *testing.T) {
	tests := []struct {
		name       string
		phase      Phase
		do         func(x *Exchange)
		wantSet    header.List
		wantRemove []string
		wantDrops  int
	}{
		{
			name:  "set replaces, last value wins, names lower-cased",
			phase: PhaseRequestHeaders,
			do: func(x *Exchange) {
				x.SetRequestHeader("X-A", "1")
				x.SetRequestHeader("x-a", "2")
			},
			wantSet: header.List{{Name: "x-a", Value: "2"}},
		},
		{
			name:  "remove after set cancels the set",
			phase: PhaseRequestHeaders,
			do: func(x *Exchange) {
				x.SetRequestHeader("x-a", "1")
				x.RemoveRequestHeader("x-a")
				x.RemoveRequestHeader("x-a")
			},
			wantRemove: []string{"x-a"},
		},
		{
			name:  "set after remove cancels the remove",
			phase: PhaseRequestHeaders,
			do: func(x *Exchange) {
				x.RemoveRequestHeader("x-a")
				x.SetRequestHeader("x-a", "1")
			},
			wantSet: header.List{{Name: "x-a", Value: "1"}},
		},
		{
			name:      "response header in a request phase is dropped",
			phase:     PhaseRequestHeaders,
			do:        func(x *Exchange) { x.SetResponseHeader("x-a", "1") },
			wantDrops: 1,
		},
		{
			name:      "request header in a response phase is dropped",
			phase:     PhaseResponseBody,
			do:        func(x *Exchange) { x.RemoveRequestHeader("x-a") },
			wantDrops: 1,
		},
		{
			name:  "names Envoy ignores or rejects",
			phase: PhaseResponseHeaders,
			do: func(x *Exchange) {
				x.SetResponseHeader(":status", "500")
				x.SetResponseHeader("host", "x")
				x.SetResponseHeader("x-envoy-upstream-service-time", "1")
				x.SetResponseHeader("bad name", "1")
				x.SetResponseHeader("x-ok", "bad\r\nvalue")
				x.SetResponseHeader("x-ok", "good")
			},
			wantSet:   header.List{{Name: "x-ok", Value: "good"}},
			wantDrops: 5,
		},
		{
			name:      "body modes only in header phases",
			phase:     PhaseRequestBody,
			do:        func(x *Exchange) { x.WantRequestBody(BodyBuffered); x.WantResponseBody(BodyBuffered) },
			wantDrops: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &Exchange{phase: tt.phase}
			tt.do(x)
			if !slices.Equal(x.reply.set, tt.wantSet) {
				t.Errorf("set %v, want %v", x.reply.set, tt.wantSet)
			}
			if !slices.Equal(x.reply.remove, tt.wantRemove) {
				t.Errorf("remove %v, want %v", x.reply.remove, tt.wantRemove)
			}
			if len(x.dropped) != tt.wantDrops {
				t.Errorf("dropped %v, want %d", x.dropped, tt.wantDrops)
			}
		})
	}
}

func TestExchangeValues(t *testing.T) {
	type k1 struct{}
	type k2 struct{}
	x := &Exchange{}
	x.Set(k1{}, 1)
	x.Set(k2{}, "two")
	x.Set(k1{}, 3)
	if x.Get(k1{}) != 3 || x.Get(k2{}) != "two" || x.Get("missing") != nil {
		t.Fatalf("values %v", x.values)
	}
}

func TestRouteMatch(t *testing.T) {
	rt := newRouteTable([]Route{
		{Name: "exact", Path: "/v1/users/me"},
		{Name: "users", Prefix: "/v1/users"},
		{Name: "root", Path: "/"},
	})
	tests := []struct{ path, want string }{
		{"/v1/users/me", "exact"},
		{"/v1/users/me?x=1", "exact"},
		{"/v1/users/me/friends", "users"},
		{"/v1/users", "users"},
		{"/v1/usersx", "users"}, // plain prefix, as Envoy's route prefix
		{"/", "root"},
		{"/?q", "root"},
		{"/v2", OtherRoute},
		{"", OtherRoute},
	}
	for _, tt := range tests {
		if got := rt.match(tt.path); got != tt.want {
			t.Errorf("match(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestLabels(t *testing.T) {
	for m, want := range map[string]string{"GET": "GET", "PATCH": "PATCH", "get": "OTHER", "PROPFIND": "OTHER", "": "OTHER"} {
		if got := methodLabel(m); got != want {
			t.Errorf("methodLabel(%q) = %q", m, got)
		}
	}
	for code, want := range map[int]string{0: "none", 99: "none", 101: "1xx", 200: "2xx", 304: "3xx", 429: "4xx", 503: "5xx", 600: "none"} {
		if got := statusClass(code); got != want {
			t.Errorf("statusClass(%d) = %q", code, got)
		}
	}
	b := newBoundedLabels(2)
	got := fmt.Sprintln(b.label("a"), b.label("b"), b.label("c"), b.label("a"), b.label(""))
	if got != "a b other a none\n" {
		t.Errorf("bounded labels: %s", got)
	}
}

func TestRateGate(t *testing.T) {
	now := time.Unix(100, 0)
	g := newRateGate(2, func() time.Time { return now })
	got := fmt.Sprint(g.allow(), g.allow(), g.allow())
	now = now.Add(time.Second)
	got += fmt.Sprint(" ", g.allow())
	if got != "true true false true" {
		t.Fatalf("gate: %s", got)
	}
}

// TestForwardedRequestHeaders: the request as Envoy will forward it is the one it sent with
// the mutations queued for the reply applied: identity's x-sluice-* values replace the client's
// (repeated lines included), removed fields are gone, the rest keeps its order.
func TestForwardedRequestHeaders(t *testing.T) {
	x := &Exchange{phase: PhaseRequestHeaders, RequestHeaders: header.List{
		{Name: ":path", Value: "/a"}, {Name: "x-user-id", Value: "u1"}, {Name: "x-sluice-user", Value: "admin"}, {Name: "accept", Value: "a"}, {Name: "x-sluice-user", Value: "root"}, {Name: "x-sluice-warm", Value: "1"},
	}}
	if got := fmt.Sprint(x.ForwardedRequestHeaders()); got != fmt.Sprint(x.RequestHeaders) {
		t.Errorf("nothing queued: %s", got)
	}
	x.SetRequestHeader("x-sluice-user", "u1")
	x.SetRequestHeader("x-sluice-tenant", "acme")
	x.RemoveRequestHeader("x-sluice-warm")
	want := header.List{{Name: ":path", Value: "/a"}, {Name: "x-user-id", Value: "u1"}, {Name: "accept", Value: "a"}, {Name: "x-sluice-user", Value: "u1"}, {Name: "x-sluice-tenant", Value: "acme"}}
	if got := x.ForwardedRequestHeaders(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("forwarded %v, want %v", got, want)
	}
	x.phase = PhaseResponseHeaders
	if got := fmt.Sprint(x.ForwardedRequestHeaders()); got != fmt.Sprint(x.RequestHeaders) {
		t.Errorf("outside the request headers phase: %s", got)
	}
}
