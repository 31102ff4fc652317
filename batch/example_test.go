package batch_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/sluicehq/sluice/batch"
)

// A Runner sends each item to the listener (here a stand-in for Envoy) and
// answers in request order; the failed dependency makes "b" a 424 and the
// url outside /api/ is refused without being sent.
func ExampleRunner_Handle() {
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil // keep the output stable
		if r.URL.Path == "/api/v1/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"batch":%q}`, r.URL.Path, r.Header.Get("X-Sluice-Batch"))
	}))
	defer listener.Close()
	r, err := batch.New(batch.Config{ListenerURL: listener.URL})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	status, body := r.Handle(context.Background(), batch.Parent{}, []byte(`{"requests":[
		{"id":"a","method":"GET","url":"/api/v1/missing"},
		{"id":"b","method":"GET","url":"/api/v1/users","dependsOn":["a"]},
		{"id":"c","method":"GET","url":"/api/v1/users/1"},
		{"id":"d","method":"GET","url":"//evil.example/api/v1"}]}`))
	fmt.Println(status)
	fmt.Println(string(body))
	// Output:
	// 200
	// {"responses":[{"id":"a","status":404,"headers":{"content-type":"text/plain; charset=utf-8","x-content-type-options":"nosniff"},"body":"NDA0IHBhZ2Ugbm90IGZvdW5kCg=="},{"id":"b","status":424,"headers":{"content-type":"application/json"},"body":{"error":{"code":"failedDependency","message":"dependency \"a\" answered 404"}}},{"id":"c","status":200,"headers":{"content-type":"application/json"},"body":{"path":"/api/v1/users/1","batch":"1"}},{"id":"d","status":400,"headers":{"content-type":"application/json"},"body":{"error":{"code":"invalidUrl","message":"url \"//evil.example/api/v1\": must be a path starting with a single /"}}}]}
}
