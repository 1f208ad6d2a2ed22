//go:build linux

package tjob

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkStart measures the start latency of /bin/true, from Run to the
// final Status, with and without the jail and a cgroup, and as tjobs runs
// a job (as-tjobs: a user namespace, a read-only root, a workspace), next
// to a plain os/exec, unshare(1) with the same namespaces and bwrap, in
// the same run. make vmbench runs it on cgroup v2.
func BenchmarkStart(b *testing.B) {
	requireRoot(b)
	b.Run("exec", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unshare", func(b *testing.B) {
		if _, err := exec.LookPath("unshare"); err != nil {
			b.Skip("unshare is not installed (util-linux)")
		}
		for i := 0; i < b.N; i++ {
			if out, err := exec.Command("unshare", "-pfmnui", "--mount-proc", "/bin/true").CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
	b.Run("bwrap", func(b *testing.B) {
		if _, err := exec.LookPath("bwrap"); err != nil {
			b.Skip("bwrap is not installed (bubblewrap)")
		}
		for i := 0; i < b.N; i++ {
			out, err := exec.Command("bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "/bin/true").CombinedOutput()
			if err != nil && strings.Contains(string(out), "pivot_root") {
				// A root that is an initramfs, which pivot_root(2)
				// refuses (make vmbench's guest switches to a tmpfs
				// first); tjob's jail does not pivot.
				b.Skipf("bwrap cannot run here: %s (the root file system is an initramfs, which pivot_root refuses)", strings.TrimSpace(string(out)))
			}
			if err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
	initPath := benchInit(b)
	for _, mode := range []struct {
		name           string
		noJail, noCgrp bool
		asTjobs        bool // a user namespace, a read-only root and a workspace
	}{
		{"job/plain", true, true, false},
		{"job/cgroup", true, false, false},
		{"job/jail", false, true, false},
		{"job/jail+cgroup", false, false, false},
		{"job/as-tjobs", false, false, true},
	} {
		b.Run(mode.name, func(b *testing.B) {
			dir := b.TempDir()
			ws := filepath.Join(b.TempDir(), "workspace")
			for i := 0; i < b.N; i++ {
				j := NewJob("/bin/true")
				j.SpoolDir = dir
				j.InitPath = initPath
				j.NoJail, j.NoCgroup = mode.noJail, mode.noCgrp
				if !mode.noCgrp {
					j.CPUPercent, j.MemoryMB, j.PidsMax = 20, 20, 64
				}
				if mode.asTjobs {
					// As tjobs: the workspace is made for the job, and
					// removed after it; both are in the time taken.
					if err := os.Mkdir(ws, 0o755); err != nil {
						b.Fatal(err)
					}
					if err := os.Chown(ws, 1_000_000_000, 1_000_000_000); err != nil {
						b.Fatal(err)
					}
					j.ReadOnlyRoot, j.TmpDir = true, ws
					j.UserNS = IDMap{HostID: 1_000_000_000, Size: 65536}
				}
				if st := <-j.Run(); st.Exit != 0 || st.Error != nil {
					b.Fatalf("%v: %v", st, st.Error)
				}
				j.Close()
				if mode.asTjobs {
					os.RemoveAll(ws)
				}
			}
		})
	}
}

// benchInit is the tjob-init the benchmarks run as the jail's init:
// $TJOB_BIN_DIR/tjob-init when there is one, as tjobs would, else the test
// binary itself (the library's fallback, slower to start).
func benchInit(b *testing.B) string {
	if dir := os.Getenv("TJOB_BIN_DIR"); dir != "" {
		if p := filepath.Join(dir, "tjob-init"); statOK(p) {
			b.Logf("the jail's init: %s", p)
			return p
		}
	}
	b.Log("the jail's init: this test binary re-executed (set TJOB_BIN_DIR to a directory with tjob-init for the init tjobs runs)")
	return ""
}

// BenchmarkJailMemory reports the resident memory of the jail's init, which
// counts against the job's memory limit, while a job sleeps.
func BenchmarkJailMemory(b *testing.B) {
	requireRoot(b)
	var total int
	for i := 0; i < b.N; i++ {
		j := NewJob("sleep", "1000")
		j.SpoolDir = b.TempDir()
		ch := j.Run()
		kib, err := rssKiB(j.Summary().Pid)
		j.Stop()
		<-ch
		j.Close()
		if err != nil {
			b.Fatal(err)
		}
		total += kib
	}
	b.ReportMetric(float64(total)/float64(b.N), "init-RSS-KiB")
}

func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, os.ErrNotExist
}

func statOK(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
