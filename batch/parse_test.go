package batch

import (
	"net/http"
	"strings"
	"testing"
)

func testParser() *parser { return newParser(Config{}.WithDefaults()) }

func TestParseBatchErrors(t *testing.T) {
	items := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"requests":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"id":"` + strings.Repeat("x", i+1) + `","method":"GET","url":"/api/x"}`)
		}
		b.WriteString(`]}`)
		return b.String()
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"not json", `nope`, 400, CodeInvalidRequest},
		{"empty", ``, 400, CodeInvalidRequest},
		{"array", `[]`, 400, CodeInvalidRequest},
		{"trailing data", `{"requests":[{"id":"1","method":"GET","url":"/api/x"}]} {}`, 400, CodeInvalidRequest},
		{"unknown field", `{"requests":[],"extra":1}`, 400, CodeInvalidRequest},
		{"unknown item field", `{"requests":[{"id":"1","method":"GET","url":"/api/x","tenant":"t"}]}`, 400, CodeInvalidRequest},
		{"no requests", `{}`, 400, CodeInvalidRequest},
		{"empty requests", `{"requests":[]}`, 400, CodeInvalidRequest},
		{"too many", items(21), 400, CodeTooManyItems},
		{"missing id", `{"requests":[{"method":"GET","url":"/api/x"}]}`, 400, CodeInvalidID},
		{"empty id", `{"requests":[{"id":"","method":"GET","url":"/api/x"}]}`, 400, CodeInvalidID},
		{"numeric id", `{"requests":[{"id":1,"method":"GET","url":"/api/x"}]}`, 400, CodeInvalidRequest},
		{"long id", `{"requests":[{"id":"` + strings.Repeat("a", 65) + `","method":"GET","url":"/api/x"}]}`, 400, CodeInvalidID},
		{"id with space", `{"requests":[{"id":"a b","method":"GET","url":"/api/x"}]}`, 400, CodeInvalidID},
		{"duplicate id", `{"requests":[{"id":"1","method":"GET","url":"/api/x"},{"id":"1","method":"GET","url":"/api/y"}]}`, 400, CodeDuplicateID},
		{"unknown dependency", `{"requests":[{"id":"1","method":"GET","url":"/api/x","dependsOn":["2"]}]}`, 400, CodeUnknownDependency},
		{"self dependency", `{"requests":[{"id":"1","method":"GET","url":"/api/x","dependsOn":["1"]}]}`, 400, CodeCyclicDependency},
		{"cycle", `{"requests":[{"id":"1","method":"GET","url":"/api/x","dependsOn":["3"]},{"id":"2","method":"GET","url":"/api/x","dependsOn":["1"]},{"id":"3","method":"GET","url":"/api/x","dependsOn":["2"]}]}`, 400, CodeCyclicDependency},
		{"deep json", `{"requests":[{"id":"1","method":"POST","url":"/api/x","headers":{"content-type":"application/json"},"body":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}]}`, 400, CodeInvalidRequest},
		{"invalid utf8", "{\"requests\":[{\"id\":\"\xff\",\"method\":\"GET\",\"url\":\"/api/x\"}]}", 400, CodeInvalidRequest},
		{"too large", `{"requests":[` + strings.Repeat(" ", 1<<20) + `]}`, 413, CodeRequestTooLarge},
	}
	p := testParser()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := p.Parse([]byte(tc.body))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", b)
			}
			if err.Status != tc.status || err.Code != tc.code {
				t.Fatalf("Parse = %d %s (%s), want %d %s", err.Status, err.Code, err.Message, tc.status, tc.code)
			}
		})
	}
}

func TestParseItemErrors(t *testing.T) {
	tests := []struct {
		name string
		item string
		code string
	}{
		{"bad method", `"method":"TRACE","url":"/api/x"`, CodeInvalidMethod},
		{"connect", `"method":"CONNECT","url":"/api/x"`, CodeInvalidMethod},
		{"absolute url", `"method":"GET","url":"http://127.0.0.1:1/api/x"`, CodeInvalidURL},
		{"nested batch", `"method":"POST","url":"/api/v1/batch"`, CodeNestedBatch},
		{"host header", `"method":"GET","url":"/api/x","headers":{"Host":"evil"}`, CodeInvalidHeader},
		{"hop by hop", `"method":"GET","url":"/api/x","headers":{"Connection":"close"}`, CodeInvalidHeader},
		{"transfer-encoding", `"method":"GET","url":"/api/x","headers":{"transfer-encoding":"chunked"}`, CodeInvalidHeader},
		{"sluice header", `"method":"GET","url":"/api/x","headers":{"X-Sluice-Tenant":"other"}`, CodeInvalidHeader},
		{"sluice batch", `"method":"GET","url":"/api/x","headers":{"x-sluice-batch":"0"}`, CodeInvalidHeader},
		{"envoy header", `"method":"GET","url":"/api/x","headers":{"x-envoy-upstream-rq-timeout-ms":"1"}`, CodeInvalidHeader},
		{"forwarded credential", `"method":"GET","url":"/api/x","headers":{"Authorization":"Bearer other"}`, CodeInvalidHeader},
		{"xff spoof", `"method":"GET","url":"/api/x","headers":{"X-Forwarded-For":"1.2.3.4"}`, CodeInvalidHeader},
		{"underscore", `"method":"GET","url":"/api/x","headers":{"x_tenant":"a"}`, CodeInvalidHeader},
		{"crlf value", `"method":"GET","url":"/api/x","headers":{"x-a":"a\r\nx-b: c"}`, CodeInvalidHeader},
		{"bad name", `"method":"GET","url":"/api/x","headers":{"x a":"b"}`, CodeInvalidHeader},
		{"case duplicate", `"method":"GET","url":"/api/x","headers":{"X-A":"1","x-a":"2"}`, CodeInvalidHeader},
		{"body without type", `"method":"POST","url":"/api/x","body":{"a":1}`, CodeInvalidBody},
		{"non-json body not base64", `"method":"POST","url":"/api/x","headers":{"content-type":"text/plain"},"body":"not base64!"`, CodeInvalidBody},
		{"non-json body object", `"method":"POST","url":"/api/x","headers":{"content-type":"text/plain"},"body":{"a":1}`, CodeInvalidBody},
	}
	p := testParser()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := p.Parse([]byte(`{"requests":[{"id":"1",` + tc.item + `},{"id":"2","method":"GET","url":"/api/ok"}]}`))
			if err != nil {
				t.Fatalf("batch refused: %v", err)
			}
			if got := b.Items[0].Err; got == nil || got.Code != tc.code || got.Status != http.StatusBadRequest {
				t.Fatalf("item error %+v, want 400 %s", got, tc.code)
			}
			if b.Items[1].Err != nil {
				t.Fatalf("valid item refused: %v", b.Items[1].Err)
			}
		})
	}
}

func TestParseItems(t *testing.T) {
	body := `{"requests":[
		{"id":"a","method":"post","url":"/api/v1/users","headers":{"Content-Type":"application/json; charset=utf-8","X-Trace":"t"},"body":{ "name" : "x" }},
		{"id":"b","method":"PUT","url":"/api/v1/files/1?v=2","headers":{"content-type":"application/octet-stream"},"body":"aGVsbG8=","dependsOn":["a","a"]},
		{"id":"c","method":"GET","url":"/api/v1/users","dependsOn":["a","b"],"body":null}
	]}`
	b, err := testParser().Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	a, bb, c := b.Items[0], b.Items[1], b.Items[2]
	if a.Err != nil || bb.Err != nil || c.Err != nil {
		t.Fatalf("item errors %v %v %v", a.Err, bb.Err, c.Err)
	}
	if a.Method != "POST" || string(a.Body) != `{"name":"x"}` || a.Header.Get("X-Trace") != "t" {
		t.Fatalf("item a = %+v body %s", a, a.Body)
	}
	if bb.Path != "/api/v1/files/1" || bb.Query != "v=2" || string(bb.Body) != "hello" || len(bb.Deps) != 1 || bb.Deps[0] != 0 {
		t.Fatalf("item b = %+v", bb)
	}
	if c.HasBody || len(c.Deps) != 2 {
		t.Fatalf("item c = %+v", c)
	}
}

// FuzzParse checks the parser never panics and that an accepted batch keeps
// its invariants: 1..MaxItems items with unique valid ids, dependencies in
// range and acyclic, valid items with a validated path.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"requests":[{"id":"1","method":"GET","url":"/api/x"}]}`,
		`{"requests":[{"id":"1","method":"GET","url":"/api/x"},{"id":"2","method":"GET","url":"/api/y","dependsOn":["1"]}]}`,
		`{"requests":[{"id":"1","method":"POST","url":"/api/x","headers":{"content-type":"application/json"},"body":{"a":[1,2,{"b":null}]}}]}`,
		`{"requests":[{"id":"1","method":"PUT","url":"/api/x","headers":{"content-type":"image/png"},"body":"iVBORw0KGgo="}]}`,
		`{"requests":[{"id":"1","method":"GET","url":"/api/x","dependsOn":["2"]},{"id":"2","method":"GET","url":"/api/x","dependsOn":["1"]}]}`,
		`{"requests":[{"id":"1","method":"GET","url":"//evil/api/x","headers":{"host":"evil"}}]}`,
		`{"requests":null}`,
		`[[[[[[[[[[`,
	} {
		f.Add([]byte(s))
	}
	cfg := Config{}.WithDefaults()
	p := newParser(cfg)
	v := newURLValidator(cfg)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := p.Parse(data)
		if err != nil {
			if b != nil || err.Status < 400 || err.Code == "" {
				t.Fatalf("bad error %+v with batch %v", err, b)
			}
			return
		}
		n := len(b.Items)
		if n == 0 || n > cfg.MaxItems {
			t.Fatalf("%d items accepted", n)
		}
		ids := map[string]bool{}
		for _, it := range b.Items {
			if !validID(it.ID) || ids[it.ID] {
				t.Fatalf("bad or duplicate id %q", it.ID)
			}
			ids[it.ID] = true
			for _, d := range it.Deps {
				if d < 0 || d >= n {
					t.Fatalf("dependency %d out of range", d)
				}
			}
			if it.Err == nil {
				full := it.Path
				if it.Query != "" {
					full += "?" + it.Query
				}
				if _, _, err := v.Validate(full); err != nil {
					t.Fatalf("valid item with invalid url %q: %v", full, err)
				}
				for k := range it.Header {
					if reservedHeader(strings.ToLower(k)) {
						t.Fatalf("reserved header %q accepted", k)
					}
				}
			}
		}
		if id, bad := cycle(b.Items); bad {
			t.Fatalf("cycle through %q accepted", id)
		}
	})
}
