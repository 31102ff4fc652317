// Package configmaptest lays out a directory the way the kubelet projects a
// ConfigMap (or Secret) volume into a pod, and updates it the way the kubelet
// does, so that a file watcher can be tested against the layout and the
// sequence of file events it meets in Kubernetes.
//
// The layout (kubernetes pkg/volume/util/atomic_writer.go, AtomicWriter):
//
//	<dir>/..2026_12_06_10_00_00.1234567890/tiers.yaml   the data, one directory per version
//	<dir>/..data -> ..2026_12_06_10_00_00.1234567890    the version in force
//	<dir>/tiers.yaml -> ..data/tiers.yaml                what the container reads
//
// An update writes a new timestamped directory, points a new `..data_tmp`
// symlink at it and renames that over `..data` (the one atomic step), then
// adds the visible symlinks of new keys, removes those of dropped keys and
// removes the previous timestamped directory. A subPath mount is a bind mount
// of one file and sees none of this: it never updates.
package configmaptest

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const (
	dataDir    = "..data"
	newDataDir = "..data_tmp"
)

// Dir is one projected volume. It is not safe for concurrent use: the
// kubelet, too, writes one version at a time.
type Dir struct {
	t    testing.TB
	path string
	keys []string // the visible names of the version in force
}

// New projects files (key → content) into a new temporary directory, as the
// kubelet does when the pod starts.
func New(t testing.TB, files map[string]string) *Dir {
	t.Helper()
	d := &Dir{t: t, path: t.TempDir()}
	d.Update(files)
	return d
}

// Path is the mount point: the directory a container is given.
func (d *Dir) Path() string { return d.path }

// File is the path a container reads key at (a symlink through `..data`).
func (d *Dir) File(key string) string { return filepath.Join(d.path, key) }

// Update replaces the volume's content with files, in the kubelet's order.
func (d *Dir) Update(files map[string]string) {
	t := d.t
	t.Helper()
	old, err := os.Readlink(filepath.Join(d.path, dataDir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// A new timestamped directory: "..", the UTC time, then a random suffix.
	ts, err := os.MkdirTemp(d.path, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for key, content := range files {
		if err := os.WriteFile(filepath.Join(ts, key), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(d.path, newDataDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d.path, newDataDir), filepath.Join(d.path, dataDir)); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(files))
	for _, key := range keys {
		if slices.Contains(d.keys, key) {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDir, key), filepath.Join(d.path, key)); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range d.keys {
		if _, ok := files[key]; !ok {
			if err := os.Remove(filepath.Join(d.path, key)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(d.path, old)); err != nil {
			t.Fatal(err)
		}
	}
	d.keys = keys
}
