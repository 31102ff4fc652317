package faultproxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// slack is what a loaded two-core machine under -race may add to a wait.
const slack = 150 * time.Millisecond

// greeting is what the test server sends first on every connection, before
// echoing: it shows when replies flow without the client sending anything.
const greeting = "hello\n"

// echoServer greets each connection, then echoes it until EOF and half-closes
// its side. It stops, with its connections, when the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				if _, err := io.WriteString(c, greeting); err != nil {
					return
				}
				if _, err := io.Copy(c, c); err != nil {
					return
				}
				_ = c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// conn is a client connection through the proxy, closed when the test ends.
type conn struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{Conn: c, r: bufio.NewReader(c)}
}

// line reads one line within d.
func (c *conn) line(d time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	return c.r.ReadString('\n')
}

// roundTrip sends s (ending in a newline) and returns its echo's round trip.
func (c *conn) roundTrip(t *testing.T, s string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := c.line(within)
	if err != nil || got != s {
		t.Fatalf("echo of %q: %q, %v", s, got, err)
	}
	return time.Since(start)
}

// greeted dials through addr and waits for the greeting; it returns the
// connection and how long the greeting took.
func greeted(t *testing.T, addr string) (*conn, time.Duration) {
	t.Helper()
	start := time.Now()
	c := dial(t, addr)
	if got, err := c.line(2 * time.Second); err != nil || got != greeting {
		t.Fatalf("greeting: %q, %v", got, err)
	}
	return c, time.Since(start)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestForwards(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c, _ := greeted(t, p.Addr())
	c.roundTrip(t, "ping\n", time.Second)

	// A payload larger than a chunk and the socket buffers, then a
	// half-close: the echo comes back whole, then EOF.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 256<<10/16)
	go func() {
		c.Write(payload)
		c.Conn.(*net.TCPConn).CloseWrite()
	}()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c.r)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo of %d bytes: got %d bytes, %v", len(payload), len(got), err)
	}
	st := p.Stats()
	if st.Accepted != 1 || st.Bytes[faultproxy.ToTarget] != int64(len(payload)+len("ping\n")) ||
		st.Bytes[faultproxy.ToClient] != int64(len(payload)+len("ping\n")+len(greeting)) {
		t.Errorf("stats %+v", st)
	}
}

func TestLatency(t *testing.T) {
	target := echoServer(t)
	tests := []struct {
		name               string
		toTarget, toClient time.Duration
	}{
		{name: "requests only", toTarget: 80 * time.Millisecond},
		{name: "replies only", toClient: 80 * time.Millisecond},
		{name: "both ways", toTarget: 50 * time.Millisecond, toClient: 30 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := faultproxy.Start(t, target)
			p.SetLatency(tt.toTarget, tt.toClient)
			// The greeting only travels to the client.
			c, g := greeted(t, p.Addr())
			if g < tt.toClient || g > tt.toClient+slack {
				t.Errorf("greeting after %v; want %v (+ up to %v)", g, tt.toClient, slack)
			}
			rtt := c.roundTrip(t, "x\n", time.Second)
			if want := tt.toTarget + tt.toClient; rtt < want || rtt > want+slack {
				t.Errorf("round trip %v; want %v (+ up to %v)", rtt, want, slack)
			}
			p.SetLatency(0, 0)
			if rtt := c.roundTrip(t, "y\n", time.Second); rtt > slack {
				t.Errorf("round trip %v after the latency was removed", rtt)
			}
		})
	}
}

// TestLatencyRemovedReleasesWaitingBytes: bytes already delayed go at once
// when the latency is removed, as after a network recovers.
func TestLatencyRemovedReleasesWaitingBytes(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c, _ := greeted(t, p.Addr())
	p.SetLatency(5*time.Second, 0)
	start := time.Now()
	io.WriteString(c, "held\n")
	time.Sleep(50 * time.Millisecond)
	p.Restore()
	if got, err := c.line(2 * time.Second); err != nil || got != "held\n" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if el := time.Since(start); el > 50*time.Millisecond+slack {
		t.Errorf("echo after %v; the 5s latency was removed after 50ms", el)
	}
}

func TestCut(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c, _ := greeted(t, p.Addr())
	p.Cut()
	if _, err := c.line(time.Second); err == nil || isTimeout(err) {
		t.Fatalf("read on a cut connection: %v; want it closed", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while cut: %v; want connection refused", err)
	}
	p.Cut() // again: nothing changes
	if st := p.Stats(); st.Active != 0 {
		t.Errorf("%d connections active while cut", st.Active)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	c, _ = greeted(t, p.Addr())
	c.roundTrip(t, "back\n", time.Second)
}

func TestBlackhole(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	open, _ := greeted(t, p.Addr())
	p.Blackhole()
	io.WriteString(open, "held\n")
	if got, err := open.line(100 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed: read %q, %v; want nothing", got, err)
	}
	// New connections are accepted, and held too.
	fresh := dial(t, p.Addr())
	if got, err := fresh.line(100 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed new connection: read %q, %v; want nothing", got, err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	if got, err := open.line(time.Second); err != nil || got != "held\n" {
		t.Fatalf("after Restore, the held bytes: %q, %v", got, err)
	}
	if got, err := fresh.line(time.Second); err != nil || got != greeting {
		t.Fatalf("after Restore, the new connection's greeting: %q, %v", got, err)
	}
}

func TestResetConns(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c, _ := greeted(t, p.Addr())
	p.ResetConns()
	if _, err := c.line(time.Second); err == nil || isTimeout(err) {
		t.Fatalf("read on a reset connection: %v; want it closed", err)
	}
	c, _ = greeted(t, p.Addr()) // new connections still work
	c.roundTrip(t, "again\n", time.Second)
	if st := p.Stats(); st.Accepted != 2 || st.Active != 1 {
		t.Errorf("stats %+v; want 2 accepted, 1 active", st)
	}
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	p := faultproxy.Start(t, down)
	c := dial(t, p.Addr())
	if _, err := c.line(time.Second); err == nil || isTimeout(err) {
		t.Fatalf("read through a proxy whose target is down: %v; want the connection closed", err)
	}
}

func TestClose(t *testing.T) {
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := greeted(t, p.Addr())
	p.Blackhole() // goroutines waiting on the hold must end too
	io.WriteString(c, "x\n")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Close: %v; want connection refused", err)
	}
	if err := p.Restore(); err == nil {
		t.Error("Restore after Close succeeded")
	}
}
