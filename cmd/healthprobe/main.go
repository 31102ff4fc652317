// Command healthprobe is the container health check of the Sluice and demo
// API images. Those images are distroless (no shell, curl or wget), so
// Docker's HEALTHCHECK and the compose healthchecks run this instead:
//
//	healthprobe [-timeout 2s] http://127.0.0.1:9091/readyz
//
// It sends one GET and exits 0 when the answer is 2xx within the timeout,
// 1 otherwise (printing why), and 2 on bad arguments. Redirects are not
// followed: a health endpoint that redirects is misconfigured.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stderr)) }

// run is main without the exit, for tests.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: healthprobe [-timeout 2s] http://host:port/path")
		return 2
	}
	target := fs.Arg(0)
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "healthprobe: %q is not an http:// or https:// URL\n", target)
		return 2
	}
	if err := probe(ctx, target, *timeout); err != nil {
		fmt.Fprintln(stderr, "healthprobe:", err)
		return 1
	}
	return 0
}

// errRedirect stops the client at the first redirect.
var errRedirect = errors.New("redirect not followed")

func probe(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	client := &http.Client{
		// No proxy from the environment: the probe targets the container itself.
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s: %s", target, resp.Status, body)
	}
	return nil
}
