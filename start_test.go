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
// final Status, with and without the jail and a cgroup, next to a plain
// os/exec and unshare(1) with the same namespaces, in the same run.
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
	for _, mode := range []struct {
		name           string
		noJail, noCgrp bool
	}{
		{"job/plain", true, true},
		{"job/cgroup", true, false},
		{"job/jail", false, true},
		{"job/jail+cgroup", false, false},
	} {
		b.Run(mode.name, func(b *testing.B) {
			dir := b.TempDir()
			for i := 0; i < b.N; i++ {
				j := NewJob("/bin/true")
				j.SpoolDir = dir
				j.NoJail, j.NoCgroup = mode.noJail, mode.noCgrp
				if !mode.noCgrp {
					j.CPUPercent, j.MemoryMB, j.PidsMax = 20, 20, 64
				}
				if st := <-j.Run(); st.Exit != 0 || st.Error != nil {
					b.Fatalf("%v: %v", st, st.Error)
				}
				j.Close()
			}
		})
	}
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
