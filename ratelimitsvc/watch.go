package ratelimitsvc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Reloader keeps a Service's rules in step with the files at a path. An invalid
// new version is rejected (logged, counted in
// sluice_ratelimit_config_reloads_total{result="error"}) and the rules in force
// keep serving. Use Load once, then Run until the context ends.
type Reloader struct {
	path string
	svc  *Service
	poll time.Duration
	log  *slog.Logger
	now  func() time.Time
	// sum is the digest of the files last applied, failing the error of
	// the last version rejected ("" when the last read was valid); both
	// are used only from Load's and Run's goroutine.
	sum     [sha256.Size]byte
	failing string
}

// NewReloader returns a reloader for svc reading path (a file or directory).
// poll <= 0 disables the periodic re-read that backs up file events.
func NewReloader(path string, svc *Service, poll time.Duration, log *slog.Logger) *Reloader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reloader{path: path, svc: svc, poll: poll, log: log, now: time.Now}
}

// Load reads and applies the rules now. It returns the error (with file:line
// detail) when they are invalid, leaving the rules in force untouched.
func (r *Reloader) Load() error {
	_, err := r.reload(true)
	return err
}

func digest(files []File) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s\n%d:", len(f.Name), f.Name, len(f.Data))
		h.Write(f.Data)
	}
	var s [sha256.Size]byte
	copy(s[:], h.Sum(nil))
	return s
}

// reload applies the files if they changed (or force), reporting whether new
// rules were applied.
func (r *Reloader) reload(force bool) (bool, error) {
	files, err := ReadRuleFiles(r.path)
	if err != nil {
		r.svc.metrics.reload(false, 0, r.now())
		return false, err
	}
	sum := digest(files)
	if !force && sum == r.sum {
		return false, nil
	}
	rules, err := ParseRules(files)
	if err != nil {
		r.svc.metrics.reload(false, 0, r.now())
		return false, err
	}
	r.sum = sum
	r.svc.SetRules(rules)
	r.svc.metrics.reload(true, len(rules.Domains()), r.now())
	return true, nil
}

// Run watches the path until ctx ends. It watches the directory holding the
// path, not the file, so editors' rename-on-save and Kubernetes ConfigMap
// updates (an atomic swap of the `..data` symlink) are both seen. Events are
// debounced; a periodic re-read covers missed events.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("ratelimit: watch %s: %w", r.path, err)
	}
	defer w.Close()
	dir := r.path
	if fi, err := os.Stat(r.path); err == nil && !fi.IsDir() {
		dir = filepath.Dir(r.path)
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("ratelimit: watch %s: %w", dir, err)
	}

	var pollC <-chan time.Time
	if r.poll > 0 {
		t := time.NewTicker(r.poll)
		defer t.Stop()
		pollC = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Remove|fsnotify.Rename) != 0 {
				debounce.Reset(100 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.WarnContext(ctx, "rate limit config watcher error", "path", r.path, "err", err)
		case <-debounce.C:
			r.apply(ctx)
		case <-pollC:
			r.apply(ctx)
		}
	}
}

// apply re-reads the rules and logs what changed: a rejected version once
// (the periodic re-read finds it again and again until it is fixed), the
// return to a valid version once (even when that version's rules are those
// in force, so nothing was reloaded), a new valid version when applied.
func (r *Reloader) apply(ctx context.Context) {
	changed, err := r.reload(false)
	switch {
	case err != nil:
		if err.Error() != r.failing {
			r.failing = err.Error()
			r.log.ErrorContext(ctx, "rate limit config rejected; previous rules keep serving", "path", r.path, "err", err)
		}
	case r.failing != "":
		r.failing = ""
		r.log.InfoContext(ctx, "rate limit config valid again", "path", r.path, "reloaded", changed, "domains", len(r.svc.Rules().Domains()))
	case changed:
		r.log.InfoContext(ctx, "rate limit config reloaded", "path", r.path, "domains", len(r.svc.Rules().Domains()))
	}
}
