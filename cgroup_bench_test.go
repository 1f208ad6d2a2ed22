//go:build linux

package tjob

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkCgroupV1 measures what the kernel takes for the cgroup work
// every job needs on cgroup v1, without the library: make a cgroup in each
// hierarchy tjob uses, move a process into them (as the jail's init joins
// them) and remove them once it has died. A move waits for an RCU grace
// period unless another happened moments before, or the hierarchy is
// mounted with favordynmods; so each move comes 100 ms after the last, as
// for a job started on its own. It reports each step in ms/op; the
// iteration's own time, sleeps included, is no figure.
func BenchmarkCgroupV1(b *testing.B) {
	requireRoot(b)
	sys, err := detectCgroups()
	if err != nil {
		b.Skip(err)
	}
	if sys.v1 == nil {
		b.Skip("not cgroup v1")
	}
	var mkdir, join, firstJoin, rmdir time.Duration
	for i := 0; i < b.N; i++ {
		var dirs []string
		for _, h := range sys.hierarchies() {
			dirs = append(dirs, filepath.Join(h.mount, fmt.Sprintf("tjob-bench-%d-%d", os.Getpid(), i)))
		}
		t := time.Now()
		for _, d := range dirs {
			if err := os.Mkdir(d, 0o755); err != nil {
				removeCgroups(b, dirs)
				b.Fatal(err)
			}
		}
		mkdir += time.Since(t)

		sleep := exec.Command("sleep", "10")
		if err := sleep.Start(); err != nil {
			removeCgroups(b, dirs)
			b.Fatal(err)
		}
		pid := []byte(strconv.Itoa(sleep.Process.Pid))
		time.Sleep(100 * time.Millisecond)
		t = time.Now()
		for k, d := range dirs {
			err = os.WriteFile(filepath.Join(d, "cgroup.procs"), pid, 0)
			if err != nil {
				break
			}
			if k == 0 {
				firstJoin += time.Since(t)
			}
		}
		join += time.Since(t)
		sleep.Process.Kill()
		sleep.Wait()
		if err != nil {
			removeCgroups(b, dirs)
			b.Fatal(err)
		}

		t = time.Now()
		removeCgroups(b, dirs)
		rmdir += time.Since(t)
	}
	perOp := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(perOp(mkdir), "mkdir-ms/op")
	b.ReportMetric(perOp(join), "join-ms/op")
	b.ReportMetric(perOp(firstJoin), "first-join-ms/op")
	b.ReportMetric(perOp(rmdir), "rmdir-ms/op")
}

// removeCgroups removes the cgroups, once the kernel has released the dead
// process in them.
func removeCgroups(b *testing.B, dirs []string) {
	for _, d := range dirs {
		if _, err := removeTree(d); err != nil {
			b.Error(err)
		}
	}
}
