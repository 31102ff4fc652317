package redisconn

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// syncBuffer is a bytes.Buffer safe for the client's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestErrorsNameTheCause: a call that runs out of time because Redis cannot
// be reached says why (the dial's error), instead of only "context deadline
// exceeded", and is still a deadline error to errors.Is.
func TestErrorsNameTheCause(t *testing.T) {
	tests := []struct {
		name, url, want string
	}{
		{name: "connection refused", url: "redis://" + closedPort(t) + "/0", want: "connection refused"},
		{name: "DNS failure", url: "redis://sluice-no-such-host.invalid:6379/0", want: "no such host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{URL: tt.url}.WithDefaults(), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = Ping(context.Background(), c, 350*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ping error %v, want it to name %q", err, tt.want)
			}
			if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "dial") {
				t.Errorf("error %v is neither the deadline nor the dial's", err)
			}
			// A pipeline's commands name it too.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			cmds, _ := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.Get(ctx, "k")
				return nil
			})
			if len(cmds) != 1 || cmds[0].Err() == nil || !strings.Contains(cmds[0].Err().Error(), tt.want) {
				t.Errorf("pipelined command: %v, want it to name %q", cmds, tt.want)
			}
		})
	}
}

// TestTimeoutWithoutDialFailure: a server that accepts and never answers is
// a plain timeout; no stale dial error is blamed.
func TestTimeoutWithoutDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns sync.WaitGroup
	done := make(chan struct{})
	defer func() { close(done); ln.Close(); conns.Wait() }()
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); <-done; c.Close() }()
		}
	}()
	c, err := New(Config{URL: "redis://" + ln.Addr().String() + "/0"}.WithDefaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = Ping(context.Background(), c, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) && !IsTimeout(err) {
		t.Fatalf("Ping error %v, want a timeout", err)
	}
	if strings.Contains(err.Error(), "dial") {
		t.Errorf("error %v blames a dial", err)
	}
}

// TestClientLogsThroughItsLogger: a client that cannot reach Redis says so
// once, with the cause, through its own structured logger (not another
// client's, and not go-redis's default logger, which writes one line per
// failed attempt to stderr), and says once when Redis is back.
func TestClientLogsThroughItsLogger(t *testing.T) {
	var mine, other syncBuffer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: refused
	c, err := New(Config{URL: "redis://" + addr + "/0"}.WithDefaults(), slog.New(slog.NewJSONHandler(&mine, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	quiet, err := New(Config{URL: "redis://" + closedPort(t) + "/0"}.WithDefaults(), slog.New(slog.NewJSONHandler(&other, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	for range 3 {
		_ = Ping(context.Background(), c, 300*time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(mine.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines for 3 failed pings, want 1:\n%s", len(lines), mine.String())
	}
	for _, want := range []string{`"level":"WARN"`, `"msg":"redis unreachable"`, `"addr":"` + addr + `"`, "connection refused"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log %q lacks %q", lines[0], want)
		}
	}
	if s := other.String(); s != "" {
		t.Errorf("another client's logger got %q", s)
	}

	// Redis comes up on that address.
	srv, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s again: %v", addr, err)
	}
	defer srv.Close()
	go func() {
		for {
			conn, err := srv.Accept()
			if err != nil {
				return
			}
			go answerPings(conn)
		}
	}()
	if err := Ping(context.Background(), c, 3*time.Second); err != nil {
		t.Fatalf("Ping after Redis came up: %v", err)
	}
	if !strings.Contains(mine.String(), `"msg":"redis reachable again"`) {
		t.Errorf("no recovery line:\n%s", mine.String())
	}
}

// answerPings is a minimal RESP server: HELLO fails (so the client falls
// back to RESP2), every other command gets +PONG.
func answerPings(conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		if strings.Contains(strings.ToUpper(string(buf[:n])), "HELLO") {
			conn.Write([]byte("-ERR unknown command 'HELLO'\r\n"))
			continue
		}
		for range strings.Count(string(buf[:n]), "*") {
			conn.Write([]byte("+PONG\r\n"))
		}
	}
}

// TestRouter: go-redis's own lines become structured warnings in the
// logger of the call's context; its lines about failed dials are left to
// the clients' hooks.
func TestRouter(t *testing.T) {
	var buf syncBuffer
	ctx := context.WithValue(context.Background(), loggerKey{}, slog.New(slog.NewJSONHandler(&buf, nil)))
	router{}.Printf(ctx, "redis: connection pool: failed to dial after %d attempts: %v", 5, errors.New("refused"))
	if buf.String() != "" {
		t.Errorf("a dial failure line was written: %s", buf.String())
	}
	router{}.Printf(ctx, "redis: something %s", "else")
	for _, want := range []string{`"level":"WARN"`, `"msg":"redis client"`, `"component":"go-redis"`, `"detail":"something else"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log %q lacks %q", buf.String(), want)
		}
	}
}
