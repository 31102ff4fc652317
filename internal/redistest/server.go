package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a redis-server may take to answer its first PING.
const startTimeout = 10 * time.Second

// Server is a redis-server process of one test, on a loopback port of its own, without
// persistence. The test may Kill and Restart it to play an outage; it is killed when the test
// ends. Its methods are safe for concurrent use; Restart fails the test on error, so call it
// from the test's goroutine.
type Server struct {
	t       testing.TB
	port    int
	busPort int // cluster bus port; 0 for a standalone server
	dir     string

	mu   sync.Mutex // guards proc
	proc *process   // nil while killed
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc // kills the process group
	done   chan struct{}      // closed once Wait returned
}

// startAttempts is how often a server is started on fresh ports when it dies at start-up:
// another process may take a port between freePorts and redis-server binding it.
const startAttempts = 3

// StartServer starts a redis-server of the test's own on a free loopback port and waits until it
// answers PING. It fails the test if redis-server is not installed or does not come up, and
// skips it under -short.
func StartServer(t testing.TB) *Server {
	t.Helper()
	skipShort(t)
	return startServer(t, false)
}

// startServer starts a standalone or cluster-enabled server, retrying on fresh ports.
func startServer(t testing.TB, cluster bool) *Server {
	t.Helper()
	var err error
	for range startAttempts {
		s := &Server{t: t, dir: t.TempDir()}
		if cluster {
			ports := freePorts(t, 2)
			s.port, s.busPort = ports[0], ports[1]
		} else {
			s.port = freePorts(t, 1)[0]
		}
		s.mu.Lock()
		err = s.startLocked()
		s.mu.Unlock()
		if err == nil {
			// Registered after TempDir's clean-up, so it runs first: the process dies before
			// its directory goes.
			t.Cleanup(s.Kill)
			return s
		}
	}
	t.Fatalf("redistest: %v", err)
	return nil
}

// PID returns the process id of the running redis-server, or 0 while it is killed: benchmarks
// read its CPU time from /proc.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Addr returns the server's address, host:port. It does not change across restarts.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Client returns a client to the server, closed when the test ends. It does not ping: the
// server may be down on purpose.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL to the server and waits until it is gone. Data is lost (no persistence).
// Killing a killed server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.proc == nil {
		return
	}
	s.proc.cancel()
	<-s.proc.done
	s.proc = nil
}

// Restart kills the server if it runs, starts it again on the same port with an empty dataset,
// and waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	if err := s.startLocked(); err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
}

func (s *Server) startLocked() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server is not installed (apt-get install redis-server): %w", err)
	}
	logFile := filepath.Join(s.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", logFile,
		"--daemonize", "no",
	}
	if s.busPort != 0 {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-node-timeout", "5000",
		)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = sysProcAttr()
	// Kill the whole process group, not only the leader, and never leave a zombie behind.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		cancel()
		return fmt.Errorf("start redis-server: %w", err)
	}
	p := &process{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	if err := waitPing(s.Addr(), p.done); err != nil {
		s.killLocked()
		return fmt.Errorf("redis-server on %s: %w; log:\n%s", s.Addr(), err, tail(logFile, 20))
	}
	return nil
}

// waitPing polls addr with PING until it answers PONG, the process exits, or startTimeout passes.
func waitPing(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		default:
		}
		if last = ping(addr); last == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %w", startTimeout, last)
}

func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// freePorts returns n distinct loopback ports that were free a moment ago. All listeners are
// held until every port is chosen, so the n ports differ.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
