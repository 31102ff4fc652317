package faultproxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/faultproxy"
)

// A proxy in front of a server: slow replies, then an outage, then recovery.
func Example() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0") // a server that says hello
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello")
			c.Close()
		}
	}()
	p, err := faultproxy.New(ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer p.Close()
	greet := func() string {
		c, err := net.Dial("tcp", p.Addr()) // clients dial the proxy
		if err != nil {
			return fmt.Sprintf("refused: %v", errors.Is(err, syscall.ECONNREFUSED))
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		return string(b)
	}

	p.SetLatency(0, 50*time.Millisecond) // replies take 50ms longer
	start := time.Now()
	fmt.Println(greet(), time.Since(start) >= 50*time.Millisecond)
	p.Cut() // open connections closed, new ones refused
	fmt.Println(greet())
	if err := p.Restore(); err != nil { // no latency, listening again
		panic(err)
	}
	fmt.Println(greet())
	// Output:
	// hello true
	// refused: true
	// hello
}
