// Package faultproxy is a TCP proxy for fault tests. It sits between a client
// (Sluice) and a server (Redis, PostgreSQL) on a loopback port of its own and
// plays network faults on demand: latency added per direction, every
// connection cut with new ones refused, traffic blackholed (held, not lost),
// and the return to normal forwarding.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Direction names one way through the proxy.
type Direction int

const (
	// ToTarget is the client-to-server direction (requests).
	ToTarget Direction = iota
	// ToClient is the server-to-client direction (replies).
	ToClient
)

func (d Direction) String() string {
	if d == ToTarget {
		return "to_target"
	}
	return "to_client"
}

// DialTimeout bounds the proxy's dial to the target for each connection.
const DialTimeout = 2 * time.Second

// chunkSize is the largest piece one read takes off a socket.
const chunkSize = 32 << 10

// queueChunks bounds the chunks read but not yet forwarded per direction of
// a connection; beyond it the reader stops and TCP flow control pushes back.
const queueChunks = 16

// Stats counts a proxy's traffic since New.
type Stats struct {
	// Accepted is how many client connections the proxy accepted.
	Accepted int64
	// Active is how many connections are open now.
	Active int
	// Bytes forwarded, by Direction.
	Bytes [2]int64
}

// Proxy forwards TCP connections from Addr to a target address. Its methods
// are safe for concurrent use. The zero value is not usable; use New.
type Proxy struct {
	target string
	addr   string // the listening address, kept across Cut and Restore

	mu       sync.Mutex // guards the fields below
	ln       net.Listener
	links    map[*link]struct{}
	latency  [2]time.Duration
	held     bool          // blackholed: nothing is forwarded, no target is dialled
	changed  chan struct{} // closed and replaced whenever held or latency change
	closed   bool
	accepted int64

	bytes [2]atomic.Int64
	wg    sync.WaitGroup // accept loops and links
}

// New starts a proxy to target (host:port) on a free loopback port. Close it
// when done.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		target:  target,
		addr:    ln.Addr().String(),
		ln:      ln,
		links:   map[*link]struct{}{},
		changed: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.accept(ln)
	return p, nil
}

// Start is New for a test: it fails the test on error and closes the proxy
// when the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the address clients dial, host:port. It does not change across Cut
// and Restore.
func (p *Proxy) Addr() string { return p.addr }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetLatency delays every byte by toTarget on its way to the target and by
// toClient on its way back, counted from when the proxy read it. A change
// applies at once to bytes still waiting, so setting zero releases them.
func (p *Proxy) SetLatency(toTarget, toClient time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = [2]time.Duration{max(toTarget, 0), max(toClient, 0)}
	p.notifyLocked()
}

// Cut closes every open connection, both sides, and stops listening: new
// connections are refused (ECONNREFUSED) until Restore. Cutting a cut proxy
// does nothing.
func (p *Proxy) Cut() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Blackhole stops forwarding: open connections stay open and new ones are
// accepted (their target is not dialled), but no byte moves either way until
// Restore, which delivers what was held. To the client it looks like a
// network partition that TCP rides out; combine with ResetConns for one that
// also broke the open connections.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = true
	p.notifyLocked()
}

// ResetConns closes every open connection, both sides, as a server crash or a
// middlebox timeout would. What happens to new connections does not change.
func (p *Proxy) ResetConns() {
	p.mu.Lock()
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Restore ends every fault: no latency, nothing held, listening again on the
// same address after a Cut. It fails only if that address cannot be bound
// again.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("faultproxy: restore after Close")
	}
	p.latency = [2]time.Duration{}
	p.held = false
	p.notifyLocked()
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("faultproxy: listen again on %s: %w", p.addr, err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

// Stats returns the traffic counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	s := Stats{Accepted: p.accepted, Active: len(p.links)}
	p.mu.Unlock()
	s.Bytes[ToTarget] = p.bytes[ToTarget].Load()
	s.Bytes[ToClient] = p.bytes[ToClient].Load()
	return s
}

// Close stops the proxy, closes every connection and waits for its
// goroutines. Safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	links := p.takeLinksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return nil
}

// notifyLocked wakes every forwarder to re-read held and latency.
func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) takeLinksLocked() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
		delete(p.links, l)
	}
	return out
}

// state returns what a forwarder needs: whether traffic is held, the
// latency of d, and the channel closed on the next change.
func (p *Proxy) state(d Direction) (held bool, latency time.Duration, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held, p.latency[d], p.changed
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Cut or Close
		}
		l := &link{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || p.ln != ln {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.accepted++
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// link is one proxied connection.
type link struct {
	client net.Conn
	done   chan struct{} // closed by close

	mu     sync.Mutex // guards server
	server net.Conn
	once   sync.Once
}

// close tears the link down: both sockets are closed, its goroutines end.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		l.mu.Lock()
		if l.server != nil {
			_ = l.server.Close()
		}
		l.mu.Unlock()
	})
}

// dial connects to target within DialTimeout, giving up early when the link
// is closed (Cut or Close must not wait for a slow dial).
func (l *link) dial(target string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-stop:
		}
	}()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", target)
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	// A blackholed proxy does not reach the target: wait for Restore.
	if !p.waitReleased(l, ToTarget) {
		return
	}
	server, err := l.dial(p.target)
	if err != nil {
		return // the client sees its connection closed, as if the target refused
	}
	l.mu.Lock()
	l.server = server
	l.mu.Unlock()
	select {
	case <-l.done: // closed while dialling
		_ = server.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(l, l.client, server, ToTarget) })
	wg.Go(func() { p.pipe(l, server, l.client, ToClient) })
	wg.Wait()
}

// waitReleased waits while traffic is held; false when the link closed.
func (p *Proxy) waitReleased(l *link, d Direction) bool {
	for {
		held, _, changed := p.state(d)
		if !held {
			return true
		}
		select {
		case <-changed:
		case <-l.done:
			return false
		}
	}
}

// chunk is a piece of the byte stream and when the proxy read it.
type chunk struct {
	data []byte
	read time.Time
}

// pipe forwards src to dst in direction d until src ends (then dst is
// half-closed, so the peer sees EOF) or the link fails (then the whole link
// is closed).
func (p *Proxy) pipe(l *link, src, dst net.Conn, d Direction) {
	queue := make(chan chunk, queueChunks)
	readDone := make(chan struct{})
	var readErr error // set before queue is closed
	go func() {
		defer close(readDone)
		defer close(queue)
		buf := make([]byte, chunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case queue <- chunk{data: append([]byte(nil), buf[:n]...), read: time.Now()}:
				case <-l.done:
					return
				}
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	defer func() { <-readDone }()
	for c := range queue {
		if !p.release(l, d, c.read) {
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			l.close()
			return
		}
		p.bytes[d].Add(int64(len(c.data)))
	}
	select {
	case <-l.done:
		return
	default:
	}
	// src ended: pass an orderly EOF on as a half-close, so a peer that
	// still has replies to send can send them; a reset ends the link.
	if tc, ok := dst.(*net.TCPConn); ok && errors.Is(readErr, io.EOF) {
		if err := tc.CloseWrite(); err != nil {
			l.close()
		}
		return
	}
	l.close()
}

// release waits until a chunk read at read may go in direction d: nothing is
// held and its latency has passed. false when the link closed.
func (p *Proxy) release(l *link, d Direction, read time.Time) bool {
	for {
		held, latency, changed := p.state(d)
		if held {
			select {
			case <-changed:
				continue
			case <-l.done:
				return false
			}
		}
		wait := time.Until(read.Add(latency))
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
		case <-l.done:
			t.Stop()
			return false
		}
		t.Stop()
	}
}
