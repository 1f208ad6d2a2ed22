// Package testdir gives tests of tjobs and tjob a temporary directory that
// the server's jobs can see: they have a /tmp of their own, so t.TempDir is
// hidden from them.
package testdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// JobVisible makes a temporary directory under the current directory, or
// under /var/tmp when that is in /tmp too, and removes it when t ends.
func JobVisible(t testing.TB) string {
	t.Helper()
	base, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if UnderTmp(base) {
		base = "/var/tmp"
	}
	dir, err := os.MkdirTemp(base, ".tjob-test-")
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(abs) })
	return abs
}

// UnderTmp reports whether path is in /tmp or $TMPDIR, which a job of the
// server may not see.
func UnderTmp(path string) bool {
	for _, tmp := range []string{"/tmp", os.TempDir()} {
		if rel, err := filepath.Rel(tmp, path); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}
