//go:build linux

package tjob

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The cgroup tests run real jobs under real limits. They need root and a
// cgroup file system with controllers, and skip, saying why, without them.
// With TJOB_REQUIRE_CGROUP=v2 (the VM tests) they fail instead unless the
// jobs use cgroup v2; with =v1, unless they use v1.
//
// Measured figures are logged (go test -v): the OOM kill, the CPU ratio and
// the I/O seconds.

// requireCgroups skips the test unless jobs can have cgroups here.
func requireCgroups(t *testing.T) *cgroupSystem {
	t.Helper()
	want := os.Getenv("TJOB_REQUIRE_CGROUP")
	if os.Geteuid() != 0 {
		if want != "" {
			t.Fatalf("TJOB_REQUIRE_CGROUP=%s, but not root", want)
		}
		t.Skip("needs root: jobs get cgroups of their own")
	}
	sys, err := detectCgroups()
	switch {
	case err != nil && want != "":
		t.Fatalf("TJOB_REQUIRE_CGROUP=%s: %v", want, err)
	case err != nil:
		t.Skipf("no usable cgroups: %v", err)
	case want == "v2" && sys.v2 == nil:
		t.Fatal("TJOB_REQUIRE_CGROUP=v2, but jobs here use cgroup v1")
	case want == "v1" && sys.v1 == nil:
		t.Fatal("TJOB_REQUIRE_CGROUP=v1, but jobs here use cgroup v2")
	}
	return sys
}

// requireController skips (or, under TJOB_REQUIRE_CGROUP, fails) when a
// controller a test limits with is missing.
func requireController(t *testing.T, sys *cgroupSystem, v2, v1 string) {
	t.Helper()
	ok := sys.v2 != nil && sys.v2.has(v2) || sys.v1 != nil && sys.v1[v1] != nil
	if ok {
		return
	}
	if os.Getenv("TJOB_REQUIRE_CGROUP") != "" {
		t.Fatalf("no %s controller", v2)
	}
	t.Skipf("no %s controller here", v2)
}

// jobCgroup is the cgroup of a running job.
func jobCgroup(t *testing.T, j *Job) cgroup {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.proc == nil || j.proc.cg == nil {
		t.Fatalf("job %s has no cgroup (state %v)", j.ID, j.state)
	}
	return j.proc.cg
}

// jobDirs are a running job's cgroup directories: one on v2, one per
// hierarchy on v1.
func jobDirs(t *testing.T, j *Job) []string {
	t.Helper()
	switch c := jobCgroup(t, j).(type) {
	case *cgroupV2:
		return []string{c.dir}
	case *cgroupV1:
		return slices.Clone(c.dirs)
	}
	t.Fatal("unknown cgroup type")
	return nil
}

func readFile(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// waitRunning waits until the job runs, failing if it ended.
func waitRunning(t *testing.T, j *Job) {
	t.Helper()
	<-j.started
	if st := j.Summary(); st.State != StateRunning {
		t.Fatalf("job not running: %v", st)
	}
}

// elapsed is how long a finished job ran.
func elapsed(st Status) time.Duration { return time.Duration(st.Stopped - st.Started) }

// blockDir is a fresh directory on a block device, for the I/O limits:
// in $TJOB_TEST_BLOCKDIR when set, else in the temp dir or /var/tmp if one
// of them is on a disk (tmpfs cannot be throttled).
func blockDir(t *testing.T) string {
	t.Helper()
	bases := []string{os.TempDir(), "/var/tmp"}
	if d := os.Getenv("TJOB_TEST_BLOCKDIR"); d != "" {
		bases = []string{d}
	}
	for _, base := range bases {
		dir, err := os.MkdirTemp(base, "tjob-io-")
		if err != nil {
			continue
		}
		if _, ok, err := deviceOfPath(dir); err == nil && ok {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
		os.RemoveAll(dir)
	}
	if os.Getenv("TJOB_TEST_BLOCKDIR") != "" {
		t.Fatalf("TJOB_TEST_BLOCKDIR=%s is not on a block device", os.Getenv("TJOB_TEST_BLOCKDIR"))
	}
	t.Skip("no directory on a block device here; set TJOB_TEST_BLOCKDIR")
	return ""
}

func assertGone(t *testing.T, what string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: cgroup %s is still there (%v)", what, d, err)
		}
	}
}

func TestCgroupMemoryLimitOOM(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "memory", "memory")
	j := newTestJob(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	j.MemoryMB = 20
	st := final(t, j.Run())
	t.Logf("MemoryMB=20, dd bs=100M: %v, exit %d, peak %.1f MiB, %v", st, st.Exit, float64(st.Usage.MemoryPeak)/(1<<20), st.Error)
	if st.Error != nil || !st.OOMKilled || st.Exit != 137 || st.Signal != syscall.SIGKILL {
		t.Fatalf("status = %v (exit %d, signal %v, OOMKilled %v, error %v), want killed for lack of memory", st, st.Exit, st.Signal, st.OOMKilled, st.Error)
	}
	if !strings.Contains(st.String(), "out of memory") {
		t.Errorf("String() = %q, want it to say out of memory", st)
	}
	if limit := uint64(20 << 20); st.Usage.MemoryPeak > limit+(1<<20) {
		t.Errorf("peak memory %d is above the limit %d", st.Usage.MemoryPeak, limit)
	}

	// A job that fits is not OOMKilled. (32, not 20: on v2 the jail's
	// init is charged too, and a -race build's takes some 15 MiB.)
	j2 := newTestJob(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1")
	j2.MemoryMB = 32
	if st := final(t, j2.Run()); st.Exit != 0 || st.OOMKilled || st.Error != nil {
		t.Errorf("small job under MemoryMB=32: %v (exit %d, OOMKilled %v, %v)", st, st.Exit, st.OOMKilled, st.Error)
	}
}

// The smallest PidsMax allowed leaves room for the jail's init, which is a
// Go program with threads of its own, and a shell.
func TestCgroupPidsMaxMinimum(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "pids", "pids")
	for _, jail := range []bool{true, false} {
		j := newTestJob(t, "sh", "-c", "echo ok")
		j.PidsMax = minPidsMax
		j.NoJail = !jail
		st := final(t, j.Run())
		if st.Exit != 0 || st.Error != nil || !slices.Equal(j.Status().Lines, []string{"ok"}) {
			t.Errorf("jail=%v, PidsMax=%d: %v (exit %d, %v) %q", jail, minPidsMax, st, st.Exit, st.Error, j.Status().Lines)
		}
	}
}

// On v1 kernels before 4.13, memory.oom_control does not count OOM kills and
// an OOM notification tells instead; this runs that path on any v1 kernel.
func TestCgroupMemoryOOMNotificationV1(t *testing.T) {
	sys := requireCgroups(t)
	if sys.v1 == nil {
		t.Skip("cgroup v1 only")
	}
	requireController(t, sys, "memory", "memory")
	v1OOMEventOnly = true
	defer func() { v1OOMEventOnly = false }()
	for _, tc := range []struct {
		bs  string
		oom bool
	}{{"100M", true}, {"1M", false}} {
		j := newTestJob(t, "dd", "if=/dev/zero", "of=/dev/null", "bs="+tc.bs, "count=1")
		j.MemoryMB = 20
		st := final(t, j.Run())
		if st.OOMKilled != tc.oom || st.Error != nil {
			t.Errorf("dd bs=%s under MemoryMB=20: OOMKilled %v (exit %d, %v), want %v", tc.bs, st.OOMKilled, st.Exit, st.Error, tc.oom)
		}
	}
}

func busyScript(n int) string {
	return fmt.Sprintf("i=0; while [ $i -lt %d ]; do i=$((i+1)); done", n)
}

// timedBusyScript runs the busy loop and prints how long it took, in
// hundredths of a second of /proc/uptime, as the job itself saw it: what
// the CPU limit slows is the command, not the jail's setup before it.
func timedBusyScript(n int) string {
	return `read a _ < /proc/uptime; ` + busyScript(n) + `; read b _ < /proc/uptime; echo $(( ${b%.*}${b#*.} - ${a%.*}${a#*.} ))`
}

func TestCgroupCPULimit(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "cpu", "cpu")

	// Calibrate the busy loop so that it takes 0.3-0.5 s unlimited, under
	// the same jail and cgroup as the limited run. The unlimited time is
	// its CPU time where that is less than its wall time: on a machine
	// busy with other work the wall time says more about the others.
	// watch, when not nil, is called once the job runs and returns when
	// the job has ended.
	run := func(n, cpu int, watch func(*Job)) (Status, time.Duration) {
		j := newTestJob(t, "sh", "-c", timedBusyScript(n))
		j.CPUPercent = cpu
		done := j.Run()
		if watch != nil {
			waitRunning(t, j)
			watch(j)
		}
		st := final(t, done)
		if st.Exit != 0 || st.Error != nil {
			t.Fatalf("busy loop: %v (exit %d, %v)", st, st.Exit, st.Error)
		}
		cs, err := strconv.Atoi(strings.TrimSpace(string(readAll(t, j, false))))
		if err != nil {
			t.Fatalf("the loop's time: %v", err)
		}
		d := time.Duration(cs) * 10 * time.Millisecond
		if st.Usage.CPU > 0 && cpu == 0 {
			d = min(d, st.Usage.CPU)
		}
		return st, d
	}
	n := 100_000
	var unlimited time.Duration
	for range 6 {
		_, unlimited = run(n, 0, nil)
		if unlimited >= 300*time.Millisecond && unlimited <= 500*time.Millisecond {
			break
		}
		n = int(float64(n) * float64(400*time.Millisecond) / float64(max(unlimited, 10*time.Millisecond)))
	}
	for range 2 { // the best of three
		_, d := run(n, 0, nil)
		unlimited = min(unlimited, d)
	}
	// The limited run. Its cgroup goes with the job, so what the kernel
	// counts is read while it runs: the CPU time it used over a window in
	// the middle of the loop (its start, the jail's setup, is not limited
	// the same way), and the periods in which the quota throttled it.
	var first, last cpuSample
	st, limited := run(n, 20, func(j *Job) {
		cg := jobCgroup(t, j).(cgroupDirer)
		for ended := false; !ended; {
			select {
			case <-j.Done():
				ended = true
			case <-time.After(50 * time.Millisecond):
				if smp, ok := sampleCPU(cg); ok {
					if first.at.IsZero() && time.Since(time.Unix(0, j.Summary().Started)) >= 300*time.Millisecond {
						first = smp
					}
					last = smp
				}
			}
		}
	})
	window := last.at.Sub(first.at)
	share := float64(last.usage-first.usage) / float64(max(window, 1))
	t.Logf("busy loop of %d: unlimited %v, CPUPercent=20 %v (%.1fx); over %v of it: %.0f%% of a CPU; throttled in %d of %d periods",
		n, unlimited.Round(time.Millisecond), limited.Round(time.Millisecond), float64(limited)/float64(unlimited),
		window.Round(time.Millisecond), 100*share, last.throttled, last.periods)
	// What the limit does, whatever else the machine runs: the job gets no
	// more than its share, and the kernel's quota, not contention, held it
	// there. The wall times compared with the unlimited run's say as much
	// about the machine's load as about the limit, so they are only shown.
	if window < 500*time.Millisecond {
		t.Fatalf("sampled the limited loop over %v only, want 500ms", window)
	}
	if share > 0.25 {
		t.Errorf("CPUPercent=20 used %.0f%% of a CPU over %v, want at most 25%%", 100*share, window.Round(time.Millisecond))
	}
	if last.throttled == 0 {
		t.Errorf("CPUPercent=20: the kernel throttled none of %d periods", last.periods)
	}
	if st.Usage.CPU <= 0 {
		t.Errorf("no CPU time reported: %+v", st.Usage)
	}
}

// cpuSample is what a running job's cgroup says of its CPU at a time.
type cpuSample struct {
	at                 time.Time
	usage              time.Duration // CPU time so far
	periods, throttled int           // quota periods, and those throttled
}

// sampleCPU reads a job's CPU time and throttling: on v1 from cpuacct.usage
// and the cpu hierarchy's cpu.stat, on v2 from cpu.stat.
func sampleCPU(cg cgroupDirer) (cpuSample, bool) {
	smp := cpuSample{at: time.Now()}
	stat, err := os.ReadFile(filepath.Join(cg.dirOf("cpu"), "cpu.stat"))
	if err != nil {
		return smp, false
	}
	smp.periods, smp.throttled = statField(string(stat), "nr_periods"), statField(string(stat), "nr_throttled")
	if us := statField(string(stat), "usage_usec"); us > 0 { // v2
		smp.usage = time.Duration(us) * time.Microsecond
		return smp, true
	}
	b, err := os.ReadFile(filepath.Join(cg.dirOf("cpuacct"), "cpuacct.usage"))
	if err != nil {
		return smp, false
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	smp.usage = time.Duration(ns)
	return smp, err == nil
}

// statField is the value of a "name value" line of a cgroup stat file, 0
// when it has none.
func statField(stat, name string) int {
	for line := range strings.Lines(stat) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == name {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// ddTimed runs dd in dir under the job's limits and returns its Status.
func ddTimed(t *testing.T, dir string, set func(*Job), args ...string) Status {
	t.Helper()
	j := newTestJob(t, "dd", args...)
	j.Dir = dir
	set(j)
	st := final(t, j.Run())
	if st.Exit != 0 || st.Error != nil {
		t.Fatalf("dd %v: %v (exit %d, %v)\n%s", args, st, st.Exit, st.Error, strings.Join(j.Status().Lines, "\n"))
	}
	return st
}

func TestCgroupWriteBPS(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "io", "blkio")
	dir := blockDir(t)
	st := ddTimed(t, dir, func(j *Job) { j.WriteBPS = 2 << 20 },
		"if=/dev/zero", "of=out", "bs=1M", "count=8", "oflag=direct")
	t.Logf("WriteBPS=2MiB/s, 8 MiB oflag=direct: %v, %d bytes written", elapsed(st).Round(time.Millisecond), st.Usage.WriteBytes)
	if elapsed(st) < 3*time.Second {
		t.Errorf("8 MiB at 2 MiB/s took %v, want at least 3s", elapsed(st))
	}
	if st.Usage.WriteBytes < 8<<20 {
		t.Errorf("Usage.WriteBytes = %d, want at least 8 MiB", st.Usage.WriteBytes)
	}
}

func TestCgroupReadBPS(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "io", "blkio")
	dir := blockDir(t)
	f, err := os.Create(filepath.Join(dir, "in"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 8<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st := ddTimed(t, dir, func(j *Job) { j.ReadBPS = 2 << 20 },
		"if=in", "of=/dev/null", "bs=1M", "iflag=direct")
	t.Logf("ReadBPS=2MiB/s, 8 MiB iflag=direct: %v, %d bytes read", elapsed(st).Round(time.Millisecond), st.Usage.ReadBytes)
	if elapsed(st) < 3*time.Second {
		t.Errorf("8 MiB at 2 MiB/s took %v, want at least 3s", elapsed(st))
	}
	if st.Usage.ReadBytes < 8<<20 {
		t.Errorf("Usage.ReadBytes = %d, want at least 8 MiB", st.Usage.ReadBytes)
	}
}

func TestCgroupPidsMaxForkBomb(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "pids", "pids")
	// The bomb runs in a background subshell, forked before the limit
	// bites; the job's own process then execs and needs no fork to stay,
	// so a shell that gives up when fork fails cannot end the job early.
	j := newTestJob(t, "sh", "-c", "(b() { b | b & }; b) & exec sleep 60")
	j.PidsMax = 32
	j.GracePeriod = time.Second
	done := j.Run()
	waitRunning(t, j)
	pidsDir := jobCgroup(t, j).(cgroupDirer).dirOf("pids")
	dirs := jobDirs(t, j)

	// Sampled until the job ends on its own, which it may: the jail's init
	// counts against PidsMax too, and a Go program that cannot make a
	// thread when it needs one dies.
	peak, events, endedEarly := 0, "", false
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		cur, err1 := os.ReadFile(filepath.Join(pidsDir, "pids.current"))
		ev, err2 := os.ReadFile(filepath.Join(pidsDir, "pids.events"))
		if err1 != nil || err2 != nil {
			endedEarly = true
			break
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(cur)))
		if err != nil {
			t.Fatal(err)
		}
		peak, events = max(peak, n), strings.TrimSpace(string(ev))
		if n > 32 {
			t.Fatalf("pids.current = %d, above PidsMax 32", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The host still forks.
	if err := exec.Command("true").Run(); err != nil {
		t.Errorf("the host cannot run a process during the fork bomb: %v", err)
	}
	t.Logf("fork bomb under PidsMax=32: peak pids.current %d; pids.events %q", peak, events)
	if !strings.HasPrefix(events, "max ") || events == "max 0" {
		t.Errorf("pids.events = %q: no fork was refused", events)
	}

	if !endedEarly {
		stopped := make(chan error, 1)
		go func() { stopped <- j.Stop() }()
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Stop did not return")
		}
	}
	st := final(t, done)
	if endedEarly {
		t.Logf("the job ended under the fork bomb before Stop: exit %d, signal %v, error %v; output:\n%s", st.Exit, st.Signal, st.Error, strings.Join(j.Status().Lines, "\n"))
	} else if st.Error != nil {
		t.Errorf("error after Stop: %v", st.Error)
	}
	assertGone(t, "after stopping the fork bomb", dirs...)
}

func TestCgroupRemoved(t *testing.T) {
	requireCgroups(t)
	owner, err := ownerName()
	if err != nil {
		t.Fatal(err)
	}
	ownerDirs := func(dirs []string) []string {
		var out []string
		for _, d := range dirs {
			out = append(out, filepath.Dir(d))
		}
		return out
	}

	t.Run("ended", func(t *testing.T) {
		j := newTestJob(t, "sh", "-c", "sleep 0.3 & sleep 0.2") // leaves a child behind
		done := j.Run()
		waitRunning(t, j)
		dirs := jobDirs(t, j)
		if st := final(t, done); st.Exit != 0 || st.Error != nil {
			t.Fatalf("%v (exit %d, %v)", st, st.Exit, st.Error)
		}
		assertGone(t, "after the job ended", dirs...)
		assertGone(t, "owner directory after its last job", ownerDirs(dirs)...)
	})
	t.Run("stopped", func(t *testing.T) {
		j := newTestJob(t, "sleep", "100")
		done := j.Run()
		waitRunning(t, j)
		dirs := jobDirs(t, j)
		if err := j.Stop(); err != nil {
			t.Fatal(err)
		}
		if st := final(t, done); !st.StopRequested || st.Error != nil {
			t.Fatalf("%v (%v)", st, st.Error)
		}
		assertGone(t, "after Stop", dirs...)
	})
	for _, jail := range []bool{true, false} {
		t.Run(fmt.Sprintf("failed start jail=%v", jail), func(t *testing.T) {
			// The cgroup is made before the process starts; a working
			// directory that does not exist fails after that.
			j := newTestJob(t, "true")
			j.Dir = "/nonexistent/tjob"
			j.NoJail = !jail
			j.MemoryMB = 64
			st := final(t, j.Run())
			if st.State != StateFailed || !strings.Contains(fmt.Sprint(st.Error), "nonexistent") {
				t.Fatalf("status = %v (%v), want a failed start naming the directory", st, st.Error)
			}
			sys, _ := detectCgroups()
			for _, h := range sys.hierarchies() {
				d, _ := h.dir(path.Join(parentOf(h, ""), owner))
				assertGone(t, "after a failed start", filepath.Join(d, j.ID), d)
			}
		})
	}
	t.Run("concurrent", func(t *testing.T) {
		const n = 8
		var chans []<-chan Status
		var jobs []*Job
		for range n {
			j := newTestJob(t, "sh", "-c", "sleep 0.1")
			j.MemoryMB = 64
			jobs = append(jobs, j)
			chans = append(chans, j.Run())
		}
		var dirs []string
		for i, ch := range chans {
			if st := final(t, ch); st.Exit != 0 || st.Error != nil {
				t.Errorf("job %d: %v (exit %d, %v)", i, st, st.Exit, st.Error)
			}
		}
		sys, _ := detectCgroups()
		for _, h := range sys.hierarchies() {
			d, _ := h.dir(path.Join(parentOf(h, ""), owner))
			dirs = append(dirs, d)
		}
		assertGone(t, "after concurrent jobs", dirs...)
	})
}

func TestCgroupLimitFiles(t *testing.T) {
	sys := requireCgroups(t)
	for _, c := range [][2]string{{"cpu", "cpu"}, {"memory", "memory"}, {"io", "blkio"}, {"pids", "pids"}} {
		requireController(t, sys, c[0], c[1])
	}
	dir := blockDir(t)
	j := newTestJob(t, "sleep", "100")
	j.Dir = dir
	j.CPUPercent = 20
	j.MemoryMB = 64
	j.PidsMax = 100
	j.ReadBPS = 3 << 20
	j.WriteBPS = 4 << 20
	devs, err := ioDevices(j.IODevices, j.ioPaths())
	if err != nil {
		t.Fatal(err)
	}
	j.Run()
	waitRunning(t, j)
	cg := jobCgroup(t, j)
	d := cg.(cgroupDirer).dirOf
	check := func(ctrl, file, want string) {
		t.Helper()
		if got := readFile(t, filepath.Join(d(ctrl), file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	mem := strconv.Itoa(64 << 20)
	if sys.v2 != nil {
		check("cpu", "cpu.max", "20000 100000")
		check("memory", "memory.max", mem)
		if _, err := os.Stat(filepath.Join(d("memory"), "memory.swap.max")); err == nil {
			check("memory", "memory.swap.max", "0")
		}
		check("pids", "pids.max", "100")
		iomax := readFile(t, filepath.Join(d("io"), "io.max"))
		for _, dev := range devs {
			if want := dev.String() + " rbps=3145728 wbps=4194304 riops=max wiops=max"; !strings.Contains(iomax, want) {
				t.Errorf("io.max = %q, want a line %q", iomax, want)
			}
		}
	} else {
		check("cpu", "cpu.cfs_quota_us", "20000")
		check("cpu", "cpu.cfs_period_us", "100000")
		check("memory", "memory.limit_in_bytes", mem)
		if _, err := os.Stat(filepath.Join(d("memory"), "memory.memsw.limit_in_bytes")); err == nil {
			check("memory", "memory.memsw.limit_in_bytes", mem)
		}
		check("pids", "pids.max", "100")
		for _, dev := range devs {
			check("blkio", "blkio.throttle.read_bps_device", dev.String()+" 3145728")
			check("blkio", "blkio.throttle.write_bps_device", dev.String()+" 4194304")
		}
	}
	// The job's process is in it, in every hierarchy.
	pid := strconv.Itoa(j.Summary().Pid)
	for _, dir := range jobDirs(t, j) {
		if procs := strings.Fields(readFile(t, filepath.Join(dir, "cgroup.procs"))); !slices.Contains(procs, pid) {
			t.Errorf("%s/cgroup.procs = %v, want the job's %s", dir, procs, pid)
		}
	}
	t.Logf("%s; devices %v", cg, devs)
	j.Stop()
}

func TestCgroupIODevicesOverride(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "io", "blkio")
	dir := blockDir(t)
	d, ok, err := deviceOfPath(dir)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	disk, err := wholeDisk(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{d.String(), "/dev/" + filepath.Base(devPath(t, disk))} {
		j := &Job{IODevices: []string{spec}, WriteBPS: 1 << 20}
		devs, err := ioDevices(j.IODevices, j.ioPaths())
		if err != nil {
			t.Errorf("IODevices %q: %v", spec, err)
			continue
		}
		if len(devs) != 1 || devs[0] != disk {
			t.Errorf("IODevices %q = %v, want %v", spec, devs, disk)
		}
	}
	for _, bad := range []string{"/dev/null", "0:0"} {
		if _, err := ioDevices([]string{bad}, nil); err == nil {
			t.Errorf("IODevices %q accepted", bad)
		}
	}
}

// devPath is the /sys/dev/block entry of a device, resolved.
func devPath(t *testing.T, d devNum) string {
	p, err := filepath.EvalSymlinks("/sys/dev/block/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWholeDiskOfPartition(t *testing.T) {
	ents, _ := os.ReadDir("/sys/class/block")
	for _, e := range ents {
		p, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", e.Name()))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "partition")); err != nil {
			continue
		}
		part, _ := parseMajMin(readFile(t, filepath.Join(p, "dev")))
		disk, _ := parseMajMin(readFile(t, filepath.Join(filepath.Dir(p), "dev")))
		got, err := wholeDisk(part)
		if err != nil || got != disk {
			t.Errorf("wholeDisk(%s, %s) = %v, %v; want %v", part, e.Name(), got, err, disk)
		}
		return
	}
	t.Skip("no partition on this machine")
}

func TestCgroupUsage(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "io", "blkio")
	dir := blockDir(t)
	j := newTestJob(t, "sh", "-c", busyScript(100_000)+"; dd if=/dev/zero of=out bs=1M count=4 oflag=direct")
	j.Dir = dir
	st := final(t, j.Run())
	t.Logf("usage: CPU %v, peak memory %d, read %d, written %d", st.Usage.CPU, st.Usage.MemoryPeak, st.Usage.ReadBytes, st.Usage.WriteBytes)
	if st.Exit != 0 || st.Error != nil {
		t.Fatalf("%v (exit %d, %v)", st, st.Exit, st.Error)
	}
	if st.Usage.CPU < 10*time.Millisecond {
		t.Errorf("CPU time %v, want some", st.Usage.CPU)
	}
	if st.Usage.WriteBytes < 4<<20 {
		t.Errorf("written %d bytes, want at least 4 MiB", st.Usage.WriteBytes)
	}
	if (sys.v1 != nil || sys.v2.has("memory")) && st.Usage.MemoryPeak == 0 {
		t.Error("no peak memory")
	}
}

func TestCgroupValidate(t *testing.T) {
	maxCPU := 100 * runtime.NumCPU()
	for _, tc := range []struct {
		set  func(*Job)
		want string // in the error; "" for valid
	}{
		{func(j *Job) { j.CPUPercent = maxCPU }, ""},
		{func(j *Job) { j.CPUPercent = 1; j.MemoryMB = 6; j.PidsMax = 16; j.ReadBPS = 4096; j.WriteBPS = 4096 }, ""},
		{func(j *Job) { j.CPUPercent = -5 }, "CPUPercent is negative (-5)"},
		{func(j *Job) { j.CPUPercent = maxCPU + 1 }, fmt.Sprintf("CPUPercent %d", maxCPU+1)},
		{func(j *Job) { j.MemoryMB = 1 }, "MemoryMB 1"},
		{func(j *Job) { j.MemoryMB = maxMemoryMB + 1 }, fmt.Sprintf("MemoryMB %d", maxMemoryMB+1)},
		{func(j *Job) { j.ReadBPS = 100 }, "ReadBPS 100"},
		{func(j *Job) { j.WriteBPS = -1 }, "WriteBPS is negative (-1)"},
		{func(j *Job) { j.PidsMax = 2 }, "PidsMax 2"},
		{func(j *Job) { j.PidsMax = 5_000_000 }, "PidsMax 5000000"},
		{func(j *Job) { j.NoCgroup = true; j.MemoryMB = 20 }, "MemoryMB 20 needs a cgroup"},
		{func(j *Job) { j.NoCgroup = true; j.CgroupParent = "/x" }, "NoCgroup"},
		{func(j *Job) { j.CgroupParent = "jobs" }, `CgroupParent "jobs"`},
		{func(j *Job) { j.CgroupParent = "/a/../b" }, `CgroupParent "/a/../b"`},
		{func(j *Job) { j.IODevices = []string{"sda"} }, `IODevices "sda"`},
	} {
		j := NewJob("true")
		tc.set(j)
		err := j.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", j, err)
		case tc.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(fmt.Sprint(err), tc.want)):
			t.Errorf("error = %v, want ErrInvalid saying %q", err, tc.want)
		}
	}
}

// makeCgroup makes a cgroup directory for a test, removed at its end.
func makeCgroup(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(dir) })
}

// staleOwners is a cgroup parent with owner directories of every kind
// CleanupStale must tell apart, each with a job cgroup "job1".
type staleOwners struct {
	t      *testing.T
	parent string
	hs     []*hier
	// stale: a dead owner's (with a process left in its job, frozen on
	// its own); reused: a live pid with another start time; alive: a live
	// owner's; locked: a dead pid whose directory is locked (its owner
	// lives in another pid namespace); then a malformed and a foreign one.
	stale, reused, alive, locked string
	orphan                       *exec.Cmd
}

func (o *staleOwners) dirsOf(name string) []string {
	var out []string
	for _, h := range o.hs {
		d, err := h.dir(path.Join(o.parent, name))
		if err != nil {
			o.t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// startedProcess starts sleep for d and returns it with its start time.
func startedProcess(t *testing.T, d string) (*exec.Cmd, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", d)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, err := procStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, start
}

func newStaleOwners(t *testing.T, sys *cgroupSystem) *staleOwners {
	o := &staleOwners{t: t, parent: fmt.Sprintf("/tjob-test-cleanup-%d", os.Getpid()), hs: sys.hierarchies()}
	for _, h := range o.hs {
		d, _ := h.dir(o.parent)
		makeCgroup(t, d)
	}
	dead, deadStart := startedProcess(t, "10")
	dead.Process.Kill()
	dead.Wait()
	live, liveStart := startedProcess(t, "100")
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	o.orphan, _ = startedProcess(t, "100") // left in the stale job cgroup: it must be killed
	t.Cleanup(func() { o.orphan.Process.Kill() })

	o.stale = fmt.Sprintf("owner-%d-%d", dead.Process.Pid, deadStart)
	o.reused = fmt.Sprintf("owner-%d-%d", live.Process.Pid, liveStart+1)
	o.alive = fmt.Sprintf("owner-%d-%d", live.Process.Pid, liveStart)
	o.locked = fmt.Sprintf("owner-%d-%d", dead.Process.Pid, deadStart+1)
	for _, name := range []string{o.stale, o.reused, o.alive, o.locked, "owner-x-1", "not-tjob"} {
		for _, d := range o.dirsOf(name) {
			makeCgroup(t, filepath.Join(d, "job1"))
		}
	}
	for _, d := range o.dirsOf(o.stale) {
		if err := os.WriteFile(filepath.Join(d, "job1", "cgroup.procs"), []byte(strconv.Itoa(o.orphan.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
		// Frozen on its own, as an owner that crashed while it killed the
		// job leaves it: the process dies only once the cleanup thaws it.
		os.WriteFile(filepath.Join(d, "job1", "freezer.state"), []byte("FROZEN"), 0)
		os.WriteFile(filepath.Join(d, "job1", "cgroup.freeze"), []byte("1"), 0)
	}
	for _, d := range o.dirsOf(o.locked) {
		f, err := os.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// checkRemoved checks that the stale and reused owners, and only they, were
// removed and reported.
func (o *staleOwners) checkRemoved(removed []string) {
	t := o.t
	for _, name := range []string{o.reused, o.stale} {
		for _, d := range o.dirsOf(name) {
			for _, w := range []string{filepath.Join(d, "job1"), d} {
				if !slices.Contains(removed, w) {
					t.Errorf("CleanupStale did not report %s", w)
				}
			}
		}
	}
	assertGone(t, "stale", append(o.dirsOf(o.stale), o.dirsOf(o.reused)...)...)
	for _, name := range []string{o.alive, o.locked, "owner-x-1", "not-tjob"} {
		for _, d := range o.dirsOf(name) {
			if _, err := os.Stat(filepath.Join(d, "job1")); err != nil {
				t.Errorf("%s was touched: %v", d, err)
			}
		}
	}
}

// checkOrphanKilled checks that the process in the stale job was killed.
func (o *staleOwners) checkOrphanKilled() {
	waited := make(chan error, 1)
	go func() { waited <- o.orphan.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		for _, d := range o.dirsOf(o.stale) { // let the cleanup's kill end it
			os.WriteFile(filepath.Join(d, "job1", "freezer.state"), []byte("THAWED"), 0)
			os.WriteFile(filepath.Join(d, "job1", "cgroup.freeze"), []byte("0"), 0)
		}
		o.t.Fatal("the process in the stale cgroup is still there 30 s after the cleanup (frozen?)")
	}
	if ws, ok := o.orphan.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		o.t.Errorf("the process in the stale cgroup: %v, want killed", err)
	}
}

func TestCgroupCleanupStale(t *testing.T) {
	o := newStaleOwners(t, requireCgroups(t))
	// As if this process had run a job under parent: CleanupStale looks
	// there too.
	owners.Lock()
	if owners.cleaned == nil {
		owners.cleaned = map[string]bool{}
	}
	owners.cleaned[o.parent] = true
	owners.Unlock()
	defer func() {
		owners.Lock()
		delete(owners.cleaned, o.parent)
		owners.Unlock()
	}()

	removed, err := CleanupStale()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed %v", removed)
	o.checkRemoved(removed)
	o.checkOrphanKilled()
}

// TestCgroupV2NestedCaller runs a job from a process in a cgroup of its own,
// not the root, with a second process beside it: both move into the
// supervisor leaf, and the job's cgroup goes under <own>/tjob.
func TestCgroupV2NestedCaller(t *testing.T) {
	if os.Getenv("TJOB_TEST_NESTED") != "" {
		nestedCaller()
		return
	}
	sys := requireCgroups(t)
	if sys.v2 == nil {
		t.Skip("cgroup v2 only (TestCgroupV2OnHybrid runs it on hybrid hosts)")
	}
	testNestedCaller(t, sys, false)
}

func testNestedCaller(t *testing.T, sys *cgroupSystem, force bool) {
	h := sys.v2
	nest := path.Join(baseOf(h), fmt.Sprintf("tjob-test-nest-%d", os.Getpid()))
	nestDir, err := h.dir(nest)
	if err != nil {
		t.Fatal(err)
	}
	makeCgroup(t, nestDir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCgroupV2NestedCaller$")
	cmd.Env = append(os.Environ(), "TJOB_TEST_NESTED="+filepath.Join(nestDir, "cgroup.procs"), "TJOB_TEST_SPOOL="+t.TempDir())
	if force {
		cmd.Env = append(cmd.Env, "TJOB_TEST_FORCE_V2=1")
	}
	out, err := cmd.CombinedOutput()
	t.Logf("nested caller:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			lines[k] = v
		}
	}
	// Without controllers to enable (a hybrid host's v2), nothing moves.
	leaf := path.Join(nest, supervisorLeaf)
	if force {
		leaf = nest
	}
	if lines["caller"] != leaf || lines["sibling"] != leaf {
		t.Errorf("caller in %q, its sibling in %q; want both in %s", lines["caller"], lines["sibling"], leaf)
	}
	if !strings.HasPrefix(lines["job"], path.Join(nest, jobsGroup, "owner-")+"") {
		t.Errorf("job in %q, want under %s", lines["job"], path.Join(nest, jobsGroup))
	}
	if lines["exit"] != "0" || lines["error"] != "<nil>" {
		t.Errorf("job: exit %s, error %s", lines["exit"], lines["error"])
	}
	ents, _ := os.ReadDir(filepath.Join(nestDir, jobsGroup))
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if want := "cpu memory io pids"; !force && readFile(t, filepath.Join(nestDir, "cgroup.subtree_control")) == "" {
		t.Errorf("no controllers enabled in %s, want %s", nest, want)
	}
}

// nestedCaller is the child of testNestedCaller.
func nestedCaller() {
	if os.Getenv("TJOB_TEST_FORCE_V2") != "" {
		forceV2 = true
	}
	must := func(err error) {
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
	must(os.WriteFile(os.Getenv("TJOB_TEST_NESTED"), []byte("0"), 0))
	sibling := exec.Command("sleep", "100")
	must(sibling.Start())
	defer func() { sibling.Process.Kill(); sibling.Wait() }()

	// The job sees its own cgroup as "/": where it is shows from here.
	j := NewJob("sleep", "100")
	j.SpoolDir = os.Getenv("TJOB_TEST_SPOOL")
	if !forceV2 {
		j.MemoryMB = 64
		j.PidsMax = 64
		j.CPUPercent = 50
	}
	done := j.Run()
	cg := func(pid string) string {
		m, err := readProcCgroup("/proc/" + pid + "/cgroup")
		must(err)
		return m[""]
	}
	job := cg(strconv.Itoa(j.Summary().Pid))
	j.Stop()
	st := <-done
	if st.Exit == 143 {
		st.Exit = 0 // stopped, as meant
	}
	fmt.Printf("caller=%s\nsibling=%s\njob=%s\nexit=%d\nerror=%v\n", cg("self"), cg(strconv.Itoa(sibling.Process.Pid)), job, st.Exit, st.Error)
	j.Close()
}

// TestCgroupV2OnHybrid runs the v2 code on a hybrid host's unified
// hierarchy, which has no controllers: no limits, but the placement, the
// kill, the removal and the cleanup are the same.
func TestCgroupV2OnHybrid(t *testing.T) {
	sys := requireCgroups(t)
	if sys.v2 != nil {
		t.Skip("jobs use cgroup v2 here already")
	}
	forceV2 = true
	defer func() { forceV2 = false }()
	sys, err := detectCgroups()
	if err != nil || sys.v2 == nil {
		t.Skipf("no cgroup v2 mount: %v", err)
	}
	t.Run("lifecycle", func(t *testing.T) {
		j := newTestJob(t, "sh", "-c", "sleep 100 & cat /proc/self/cgroup; exec sleep 100")
		done := j.Run()
		waitRunning(t, j)
		c, ok := jobCgroup(t, j).(*cgroupV2)
		if !ok || c.IntoFile() == nil {
			t.Fatalf("cgroup %v: want v2 with IntoFile", c)
		}
		// Once the job has said where it is, it is down to its two sleeps.
		// It sees its cgroup as the root of its cgroup namespace.
		waitFor(10*time.Second, func() bool { return len(j.Status().Lines) > 0 })
		if lines := j.Status().Lines; !slices.Contains(lines, "0::/") {
			t.Errorf("job's cgroups %q, want 0::/", lines)
		}
		if m, err := readProcCgroup(fmt.Sprintf("/proc/%d/cgroup", j.Summary().Pid)); err != nil || m[""] != c.name {
			t.Errorf("the job's cgroup seen from the host: %q (%v), want %s", m[""], err, c.name)
		}
		procs := readFile(t, filepath.Join(c.dir, "cgroup.procs"))
		if len(strings.Fields(procs)) < 3 {
			t.Errorf("cgroup.procs = %q, want the jail's init and two sleeps", procs)
		}
		j.Stop()
		st := final(t, done)
		if st.Error != nil {
			t.Errorf("%v (%v)", st, st.Error)
		}
		if st.Usage.CPU <= 0 {
			t.Errorf("no CPU time: %+v", st.Usage)
		}
		assertGone(t, "after Stop", c.dir, c.ownerDir)
	})
	t.Run("limits refused", func(t *testing.T) {
		j := newTestJob(t, "true")
		j.MemoryMB = 20
		st := final(t, j.Run())
		if st.State != StateFailed || !strings.Contains(fmt.Sprint(st.Error), "memory controller") {
			t.Errorf("MemoryMB without a memory controller: %v (%v)", st, st.Error)
		}
	})
	t.Run("cleanup", func(t *testing.T) { TestCgroupCleanupStale(t) })
	t.Run("removed", func(t *testing.T) {
		// No limits: run TestCgroupRemoved's cases without MemoryMB.
		j := newTestJob(t, "true")
		j.Dir = "/nonexistent/tjob"
		j.NoJail = true
		st := final(t, j.Run())
		if st.State != StateFailed {
			t.Fatalf("%v", st)
		}
		owner, _ := ownerName()
		d, _ := sys.v2.dir(path.Join(parentOf(sys.v2, ""), owner))
		assertGone(t, "after a failed start", d)
	})
	t.Run("nested caller", func(t *testing.T) { testNestedCaller(t, sys, true) })
}

func TestCgroupMountParsing(t *testing.T) {
	if got := unescapeMount(`/a\040b\134c`); got != `/a b\c` {
		t.Errorf("unescapeMount = %q", got)
	}
	file := filepath.Join(t.TempDir(), "cgroup")
	os.WriteFile(file, []byte("12:cpu,cpuacct:/a\n4:memory:/b/c\n1:name=systemd:/x\n0::/u\n"), 0o644)
	m, err := readProcCgroup(file)
	if err != nil {
		t.Fatal(err)
	}
	if m["cpu"] != "/a" || m["cpuacct"] != "/a" || m["memory"] != "/b/c" || m[""] != "/u" {
		t.Errorf("readProcCgroup = %v", m)
	}
	h := &hier{mount: "/sys/fs/cgroup", root: "/ns"}
	for p, want := range map[string]string{"/ns": "/sys/fs/cgroup", "/ns/x": "/sys/fs/cgroup/x", "/nsx": "", "/": ""} {
		got, err := h.dir(p)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("dir(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	for name, ok := range map[string]bool{
		"owner-1-2": true, "owner-4194304-18446744073709551615": true,
		"owner-0-2": false, "owner-01-2": false, "owner-1": false, "owner-1-2-3": false, "xowner-1-2": false,
		"owner-12345678901-1": false, "owner-1-18446744073709551616": false, "owner-+1-2": false, "owner-1-": false,
	} {
		if _, _, got := parseOwner(name); got != ok {
			t.Errorf("parseOwner(%q) = %v", name, got)
		}
	}
	if _, err := procStartTime(os.Getpid()); err != nil {
		t.Error(err)
	}
}

// Kill and Remove may be called on an empty cgroup, twice, and in any
// order; Usage of an empty cgroup is zero.
func TestCgroupKillEmptyTwice(t *testing.T) {
	requireCgroups(t)
	j := NewJob("true")
	cg, err := newCgroup(j)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	switch c := cg.(type) {
	case *cgroupV2:
		dirs = []string{c.dir}
	case *cgroupV1:
		dirs = c.dirs
	}
	for range 2 {
		if err := cg.Kill(0); err != nil {
			t.Fatal(err)
		}
	}
	if u, oom := cg.Usage(); u.CPU != 0 || oom {
		t.Errorf("usage of an empty cgroup: %+v, OOM %v", u, oom)
	}
	for range 2 {
		if err := cg.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cg.Kill(0); err != nil {
		t.Errorf("Kill after Remove: %v", err)
	}
	assertGone(t, "after Remove", dirs...)
}

// A process waiting on throttled I/O cannot die before its I/O is done:
// Kill lifts the throttle, so that stopping such a job takes no longer than
// any other, and leaves nothing behind.
func TestCgroupKillThrottledIO(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "io", "blkio")
	dir := blockDir(t)
	// 1 MiB at 4 KiB/s would take over four minutes.
	j := newTestJob(t, "dd", "if=/dev/zero", "of=out", "bs=1M", "count=1", "oflag=direct")
	j.Dir = dir
	j.WriteBPS = minBPS
	j.GracePeriod = 200 * time.Millisecond
	done := j.Run()
	waitRunning(t, j)
	dirs := jobDirs(t, j)
	time.Sleep(300 * time.Millisecond) // dd is waiting on its write
	start := time.Now()
	if err := j.Stop(); err != nil {
		t.Fatal(err)
	}
	st := final(t, done)
	t.Logf("stopped a throttled write in %v: %v", time.Since(start).Round(time.Millisecond), st)
	if st.Error != nil {
		t.Errorf("error: %v", st.Error)
	}
	// Left throttled, the write would hold the stop for minutes; the bound
	// is far from both that and a stop on a busy machine.
	if d := time.Since(start); d > time.Minute {
		t.Errorf("Stop took %v: the write was not let through", d)
	}
	assertGone(t, "after stopping throttled I/O", dirs...)
}

// The pieces of the kill that cgroup.kill replaces on v2 (kernels before
// 5.14) and that v1 uses: freezing, and killing what cgroup.procs lists.
func TestCgroupKillProcs(t *testing.T) {
	sys := requireCgroups(t)
	h := sys.hierarchies()[0]
	dir, err := h.dir(path.Join(parentOf(h, ""), fmt.Sprintf("tjob-test-kill-%d", os.Getpid())))
	if err != nil {
		t.Fatal(err)
	}
	makeCgroup(t, dir)
	makeCgroup(t, filepath.Join(dir, "sub"))
	var cmds []*exec.Cmd
	for i := range 4 {
		cmd := exec.Command("sleep", "100")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		target := dir
		if i%2 == 1 {
			target = filepath.Join(dir, "sub") // below: killed too
		}
		if err := os.WriteFile(filepath.Join(target, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	if h.version == 2 {
		freezeV2(dir, true)
		// freezeV2 waits a second at most; a loaded machine may take
		// longer, and the freeze is what is checked here.
		frozen := waitFor(20*time.Second, func() bool {
			return strings.Contains(readFile(t, filepath.Join(dir, "cgroup.events")), "frozen 1")
		})
		if !frozen {
			t.Errorf("cgroup.events after freezing: %q", readFile(t, filepath.Join(dir, "cgroup.events")))
		}
		freezeV2(dir, false)
	}
	n, err := signalProcs([]string{dir}, unix.SIGKILL, 0)
	if err != nil || n != 4 {
		t.Fatalf("signalProcs = %d, %v; want 4", n, err)
	}
	for _, cmd := range cmds {
		cmd.Wait()
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
			t.Errorf("sleep %d: %v, want killed", cmd.Process.Pid, cmd.ProcessState)
		}
	}
	if n, err := signalProcs([]string{dir}, unix.SIGKILL, 0); n != 0 || err != nil {
		t.Errorf("signalProcs of an empty cgroup = %d, %v", n, err)
	}
}

// Job.CgroupParent puts jobs elsewhere, made when missing; on v2 a parent
// without the controllers a limit needs is refused, naming the controller.
func TestCgroupParentOverride(t *testing.T) {
	sys := requireCgroups(t)
	top := fmt.Sprintf("/tjob-test-parent-%d", os.Getpid())
	for _, h := range sys.hierarchies() {
		d, _ := h.dir(top)
		t.Cleanup(func() { removeTree(d) })
	}
	j := newTestJob(t, "sleep", "100")
	j.CgroupParent = top + "/jobs"
	done := j.Run()
	if st := j.Summary(); st.State != StateRunning {
		t.Fatalf("%v (exit %d, %v)", st, st.Exit, st.Error)
	}
	// The job sees its cgroup as "/": where it is shows from here.
	host, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", j.Summary().Pid))
	j.Stop()
	final(t, done)
	owner, _ := ownerName()
	want := path.Join(top, "jobs", owner, j.ID)
	if out := string(host); !strings.Contains(out, ":"+want) {
		t.Errorf("job's cgroups:\n%s\nwant %s", out, want)
	}
	for _, h := range sys.hierarchies() {
		d, _ := h.dir(path.Join(top, "jobs", owner))
		assertGone(t, "after the job", d)
	}

	if sys.v2 == nil || !sys.v2.has("memory") || !sys.v2.has("pids") {
		return
	}
	// /top/pidsonly enables pids but not memory for /top/pidsonly/x.
	d, _ := sys.v2.dir(top + "/pidsonly/x")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := enableControllers(filepath.Dir(filepath.Dir(d)), []string{"memory", "pids"}, false); err != nil {
		t.Fatal(err)
	}
	if err := enableControllers(filepath.Dir(d), []string{"pids"}, false); err != nil {
		t.Fatal(err)
	}
	j2 := newTestJob(t, "true")
	j2.CgroupParent = top + "/pidsonly/x"
	j2.MemoryMB = 20
	st := final(t, j2.Run())
	if st.State != StateFailed || !strings.Contains(fmt.Sprint(st.Error), "memory controller") {
		t.Errorf("MemoryMB under a parent without memory: %v (%v)", st, st.Error)
	}
	t.Logf("%v", st.Error)
	j3 := newTestJob(t, "true")
	j3.CgroupParent = top + "/pidsonly/x"
	j3.PidsMax = 20
	if st := final(t, j3.Run()); st.Exit != 0 || st.Error != nil {
		t.Errorf("PidsMax under a parent with pids: %v (%v)", st, st.Error)
	}
}

// TestCgroupWriteBPSInWorkspace: a Dir under /tmp in a read-only jail is in
// TmpDir on the host, and that is the disk WriteBPS limits; the job's path
// does not exist on the host.
func TestCgroupWriteBPSInWorkspace(t *testing.T) {
	sys := requireCgroups(t)
	requireController(t, sys, "io", "blkio")
	work := blockDir(t)
	if err := os.MkdirAll(filepath.Join(work, "sub"), 0o777); err != nil {
		t.Fatal(err)
	}
	st := ddTimed(t, "/tmp/sub", func(j *Job) {
		j.ReadOnlyRoot, j.TmpDir, j.WriteBPS = true, work, 2<<20
	}, "if=/dev/zero", "of=out", "bs=1M", "count=4", "oflag=direct")
	t.Logf("WriteBPS=2MiB/s in TmpDir/sub, 4 MiB oflag=direct: %v, %d bytes written", elapsed(st).Round(time.Millisecond), st.Usage.WriteBytes)
	if elapsed(st) < 1500*time.Millisecond || st.Usage.WriteBytes < 4<<20 {
		t.Errorf("4 MiB at 2 MiB/s in /tmp/sub took %v (%d bytes written), want at least 1.5 s", elapsed(st), st.Usage.WriteBytes)
	}
	if fi, err := os.Stat(filepath.Join(work, "sub", "out")); err != nil || fi.Size() != 4<<20 {
		t.Errorf("the job's /tmp/sub/out is not TmpDir/sub/out on the host: %v", err)
	}
}

func TestHostDir(t *testing.T) {
	wd, _ := os.Getwd()
	for _, c := range []struct {
		j    *Job
		want string
	}{
		{&Job{}, wd},
		{&Job{Dir: "/srv/x"}, "/srv/x"},
		{&Job{Dir: "/tmp/a", NoJail: true}, "/tmp/a"},
		{&Job{Dir: "/tmp/a"}, "/tmp/a"},
		{&Job{Dir: "/tmp", ReadOnlyRoot: true}, ""},
		{&Job{Dir: "/tmp/a", ReadOnlyRoot: true}, "/tmp/a"},
		{&Job{Dir: "/tmp/a/../b", ReadOnlyRoot: true, TmpDir: "/w/1"}, "/w/1/b"},
		{&Job{Dir: "/tmp", ReadOnlyRoot: true, TmpDir: "/w/1"}, "/w/1"},
		{&Job{Dir: "/tmpx", ReadOnlyRoot: true, TmpDir: "/w/1"}, "/tmpx"},
		{&Job{Dir: "/etc", ReadOnlyRoot: true, TmpDir: "/w/1"}, "/etc"},
	} {
		if got := c.j.hostDir(); got != c.want {
			t.Errorf("Dir %q (ReadOnlyRoot %v, TmpDir %q, NoJail %v): hostDir %q, want %q",
				c.j.Dir, c.j.ReadOnlyRoot, c.j.TmpDir, c.j.NoJail, got, c.want)
		}
	}
}
