package devstack

import (
	"net"
	"sync"
	"sync/atomic"
)

// defaultMaxConnections is MaxConnections' default: the connection limit
// Envoy's edge proxy guidance gives its overload manager
// (global_downstream_max_connections).
const defaultMaxConnections = 50000

// maxConnections returns the gateway's connection limit for configured (0:
// the default), at most half of nofile, the process's file descriptor
// limit (0: unknown).
func maxConnections(configured int, nofile uint64) int {
	n := configured
	if n <= 0 {
		n = defaultMaxConnections
		if nofile > 0 && uint64(n) > nofile/2 {
			n = int(nofile / 2)
		}
	}
	return max(n, 1)
}

// limitListener closes each connection it accepts beyond max open ones, at
// once, as Envoy does past global_downstream_max_connections (the overload
// manager's resource monitor; the connection is accepted, then closed). Safe
// for concurrent use.
type limitListener struct {
	net.Listener
	max    int64
	active atomic.Int64
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{Listener: ln, max: int64(max)}
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.active.Add(1) > l.max {
			l.active.Add(-1)
			_ = c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l}, nil
	}
}

// limitConn gives its slot back once, on the first Close.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.active.Add(-1) })
	return err
}
