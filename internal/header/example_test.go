package header_test

import (
	"fmt"

	"github.com/sluicehq/sluice/internal/header"
)

func ExampleList() {
	h := header.List{{Name: "content-type", Value: "text/plain"}}
	h.Add(":status", "200") // pseudo-headers stay ahead of regular fields
	h.Add("Vary", "accept")
	h.Add("vary", "origin")
	h.Set("content-type", "application/json")
	fmt.Println(h.Get(":status"), h.Values("vary"), h.Has("etag"))
	fmt.Println(h)
	// Output:
	// 200 [accept origin] false
	// [{:status 200} {content-type application/json} {vary accept} {vary origin}]
}
