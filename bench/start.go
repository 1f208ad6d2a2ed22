package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const startIntro = "Wall time to run `/bin/true` to its end, measured in the harness process. " +
	"The exec-based rows time `os/exec` Start to Wait; the tjob rows time `Job.Run` to the final Status on its channel " +
	"(the library in-process, spool in the same scratch directory). All variants run round-robin, after 3 warm-up runs each. " +
	"Limits, for tjob and runc alike, are the RFD's: CPU 20% of one CPU, memory 20 MiB (swap off where accounted), " +
	"20 MiB/s read and write on the root disk, 1024 pids."

// The RFD's limits, as the tjobs server applies them.
const (
	limCPUPercent = 20
	limMemoryMB   = 20
	limBPS        = 20 << 20
	limPids       = 1024
)

// variant is one way to run /bin/true.
type variant struct {
	name   string
	run    func() (time.Duration, error)
	skip   string
	xs     []float64 // ms
	failed error
}

func execTimer(name string, args ...string) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		cmd := exec.Command(name, args...)
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			// Run again to say why.
			out, _ := exec.Command(name, args...).CombinedOutput()
			return d, fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(out)))
		}
		return d, nil
	}
}

func tjobTimer(dir string, jail, limits bool) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		j := tjob.NewJob("/bin/true")
		if limits {
			j.CPUPercent, j.MemoryMB, j.ReadBPS, j.WriteBPS, j.PidsMax = limCPUPercent, limMemoryMB, limBPS, limBPS, limPids
		} else {
			j.NoCgroup = true
		}
		j.NoJail = !jail
		j.SpoolDir = dir
		t0 := time.Now()
		st := <-j.Run()
		d := time.Since(t0)
		j.Close()
		if st.Error != nil || st.Exit != 0 {
			return d, fmt.Errorf("tjob job: exit %d: %v", st.Exit, st.Error)
		}
		return d, nil
	}
}

func sectionStart(ctx context.Context, e *env, s *section) error {
	n := 100
	if e.quick {
		n = 15
	}
	spool := filepath.Join(e.work, "spool-lib")
	vs := []*variant{
		{name: "plain os/exec of /bin/true", run: execTimer("/bin/true")},
		{name: "unshare -pfmnu --mount-proc true", run: execTimer("unshare", "-pfmnu", "--mount-proc", "true")},
		{name: "bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev true", run: execTimer("bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true")},
		{name: "runc run, busybox bundle, same limits"},
		{name: "for reference: os/exec of an empty Go program (bench/noop): a Go runtime start alone", run: execTimer(e.noop)},
		{name: "for reference: os/exec of this harness binary, exiting at once (`gen -size 0`): a Go runtime start with all its packages' initialization (the library's jail init, this binary, stops in the tjob package's init: it pays at most this)", run: execTimer(e.self, "gen", "-size", "0")},
		{name: "for reference: os/exec of tjobs, exiting at once (`tjobs -h`): what its jail init pays", run: execTimer(e.tjobs, "-h")},
		{name: "tjob job, limits + jail (library: Run → final Status)", run: tjobTimer(spool, true, true)},
		{name: "tjob job, limits, no jail (NoJail)", run: tjobTimer(spool, false, true)},
		{name: "tjob job, jail, no cgroup (NoCgroup)", run: tjobTimer(spool, true, false)},
		{name: "tjob job, no cgroup, no jail (NoCgroup + NoJail: the library's bare exec path)", run: tjobTimer(spool, false, false)},
	}
	execV, unshareV, bwrapV, runcV, noopV, goV, tjobV, nojailV, nocgV, bareV := vs[0], vs[1], vs[2], vs[3], vs[4], vs[5], vs[7], vs[8], vs[9], vs[10]
	if e.noop == "" {
		noopV.skip = "no -noop binary"
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		unshareV.skip = "unshare(1) missing (Debian util-linux)"
	} else if !e.root {
		unshareV.skip = "needs root"
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		bwrapV.skip = "bwrap missing (Debian bubblewrap)"
	}
	if !e.root {
		tjobV.skip = "needs root (namespaces and cgroups)"
		nojailV.skip = "needs root (cgroups)"
		nocgV.skip = "needs root (namespaces)"
		bareV.skip = "needs root"
	}
	if run, why := e.runcBundle(); why != "" {
		runcV.skip = why
	} else {
		runcV.run = run
	}

	// Warm up, and find out which variants work here.
	for _, v := range vs {
		if v.skip != "" {
			continue
		}
		for range 3 {
			if _, err := v.run(); err != nil {
				v.skip = "fails here: " + err.Error()
				break
			}
		}
	}
	deadline := time.Now().Add(50 * time.Second)
	for i := 0; i < n && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		for _, v := range vs {
			if v.skip != "" || v.failed != nil {
				continue
			}
			d, err := v.run()
			if err != nil {
				v.failed = err
				continue
			}
			v.xs = append(v.xs, float64(d)/float64(time.Millisecond))
		}
	}
	med := func(v *variant) float64 {
		if v.skip != "" || len(v.xs) == 0 {
			return math.NaN()
		}
		return summarize(v.xs).med
	}
	base := med(execV)
	for _, v := range vs {
		if v.skip != "" {
			s.skipRow(v.name, v.skip)
			continue
		}
		if v.failed != nil {
			s.note("%s failed during the runs: %v", v.name, v.failed)
		}
		r := fromStats(&row{what: v.name, unit: "ms"}, summarize(v.xs), "p10–p90")
		if v != execV {
			r.anchor = "plain os/exec"
			r.ratio = ratioX(r.value / base)
		}
		s.add(r)
	}
	// The targets.
	if tjobV.skip == "" && len(tjobV.xs) > 0 {
		t := med(tjobV)
		if u := med(unshareV); !math.IsNaN(u) {
			s.add(fromStats(&row{what: "tjob job vs unshare", unit: "ms", anchor: fmt.Sprintf("unshare %.2f ms", u),
				ratio: ratioX(t/u) + " of unshare", target: "≤ 2× unshare", met: yesNo(t <= 2*u)}, summarize(tjobV.xs), "p10–p90"))
		} else {
			s.skipRow("tjob job vs unshare", "no unshare figure")
		}
		if r := med(runcV); !math.IsNaN(r) {
			s.add(fromStats(&row{what: "tjob job vs runc", unit: "ms", anchor: fmt.Sprintf("runc %.2f ms", r),
				ratio: fmt.Sprintf("runc takes %s", ratioX(r/t)), target: "≥ 5× faster than runc", met: yesNo(r >= 5*t)}, summarize(tjobV.xs), "p10–p90"))
		} else {
			s.skipRow("tjob job vs runc", "no runc figure: "+runcV.skip)
		}
		if len(nocgV.xs) > 0 && len(bareV.xs) > 0 && len(nojailV.xs) > 0 && len(goV.xs) > 0 {
			s.note("Where a jailed start with limits goes (medians above): the library's bare exec path takes %.2f ms; "+
				"the jail adds %.2f ms (jail, no cgroup − bare path): its init is this Go binary re-executed, and starting this binary takes %.2f ms "+
				"(an empty Go program: %.2f ms), while unshare's namespaces with a /proc and one fork+exec take %.2f ms in all; "+
				"the cgroups add %.2f ms (limits + jail − jail, no cgroup). "+
				"On cgroup v1 the init is needed even without the jail, to join the cgroups before the exec: limits alone take %.2f ms.",
				med(bareV), med(nocgV)-med(bareV), med(goV), med(noopV), med(unshareV), t-med(nocgV), med(nojailV))
		}
		// Did the job get a cgroup of its own? The limits mean nothing
		// without one.
		s.note("%s", e.libraryCgroupCheck(spool))
		if t > 2*med(unshareV) && ctx.Err() == nil {
			prof, err := e.profile(ctx, "start", []string{"-p", strconv.Itoa(os.Getpid())}, func() error {
				for range 40 {
					if _, err := tjobTimer(spool, true, true)(); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				s.note("Profile of 40 jailed starts failed: %v", err)
			} else {
				s.profiles = append(s.profiles, profileText{"Profile: 40 jailed starts with limits (the harness and its children: `exe` is the jail's init before it execs, `tjobbench` the library)", prof})
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if e.root && len(tjobV.xs) > 0 && med(tjobV)-med(nocgV) > 1 {
		cgroupV1Probe(s, 20)
	}
	return startServerFigures(ctx, e, s, med(tjobV))
}

// cgroupV1Probe measures what the kernel takes for the cgroup operations
// every job needs on cgroup v1, without the library: make a cgroup in each
// hierarchy tjob uses, move a process into each, remove them.
func cgroupV1Probe(s *section, reps int) {
	mounts := map[string]string{}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	favor := false
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || g[0] != "cgroup" {
			continue
		}
		if strings.Contains(g[2], "favordynmods") {
			favor = true
		}
		for _, o := range strings.Split(g[2], ",") {
			switch o {
			case "freezer", "cpu", "cpuacct", "memory", "blkio", "pids":
				mounts[o] = f[4]
			}
		}
	}
	if len(mounts) == 0 {
		return // not cgroup v1
	}
	seen := map[string]bool{}
	var roots []string
	for _, m := range mounts {
		if !seen[m] {
			seen[m] = true
			roots = append(roots, m)
		}
	}
	var mk, join, first, rm []float64
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for i := 0; i < reps; i++ {
		dirs := make([]string, len(roots))
		for k, r := range roots {
			dirs[k] = filepath.Join(r, fmt.Sprintf("tjobbench-probe-%d-%d", os.Getpid(), i))
		}
		cleanup := func() {
			for _, d := range dirs {
				os.Remove(d)
			}
		}
		t := time.Now()
		for _, d := range dirs {
			if err := os.Mkdir(d, 0o755); err != nil {
				cleanup()
				s.note("cgroup v1 probe: %v", err)
				return
			}
		}
		mk = append(mk, ms(time.Since(t)))
		cmd := exec.Command("sleep", "10")
		if err := cmd.Start(); err != nil {
			cleanup()
			return
		}
		pid := []byte(strconv.Itoa(cmd.Process.Pid))
		// As a job that starts after a quiet moment: moves of processes
		// between cgroups are cheap only right after another one.
		time.Sleep(100 * time.Millisecond)
		t = time.Now()
		var err error
		for k, d := range dirs {
			if k == 0 && i == 0 {
				var stack string
				stack, err = blockedStack(func() error { return os.WriteFile(filepath.Join(d, "cgroup.procs"), pid, 0) })
				if stack != "" {
					s.profiles = append(s.profiles, profileText{"Kernel stack of the first cgroup.procs write, sampled from /proc/self/task/TID/stack while it blocked", stack})
				}
			} else {
				err = os.WriteFile(filepath.Join(d, "cgroup.procs"), pid, 0)
			}
			if err != nil {
				break
			}
			if k == 0 {
				first = append(first, ms(time.Since(t)))
			}
		}
		join = append(join, ms(time.Since(t)))
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			cleanup()
			s.note("cgroup v1 probe: %v", err)
			return
		}
		t = time.Now()
		for _, d := range dirs {
			if err := os.Remove(d); err != nil {
				// A cgroup is removable only once its dead task has been
				// released: retry briefly.
				for j := 0; j < 100 && err != nil; j++ {
					time.Sleep(time.Millisecond)
					err = os.Remove(d)
				}
			}
		}
		rm = append(rm, ms(time.Since(t)))
	}
	n := len(roots)
	if !favor {
		s.note("No cgroup v1 hierarchy here is mounted with `favordynmods`: moving a process into a cgroup (a write to cgroup.procs) first waits for an RCU grace period " +
			"(rcu_sync_enter → synchronize_rcu, see the kernel stack below) unless another move happened moments before. On cgroup v1 every job pays it once, " +
			"when its init joins its cgroups; cgroup v2's clone3(CLONE_INTO_CGROUP) places the process at birth without a move.")
	}
	s.add(fromStats(&row{what: fmt.Sprintf("diagnostic, no tjob: cgroup v1, mkdir a cgroup in each of the %d hierarchies", n), unit: "ms"}, summarize(mk), "p10–p90"))
	s.add(fromStats(&row{what: fmt.Sprintf("diagnostic, no tjob: move a process into them (%d writes to cgroup.procs)", n), unit: "ms"}, summarize(join), "p10–p90"))
	s.add(fromStats(&row{what: "diagnostic, no tjob: … of which the first write (100 ms after the last move)", unit: "ms"}, summarize(first), "p10–p90"))
	s.add(fromStats(&row{what: fmt.Sprintf("diagnostic, no tjob: rmdir the %d cgroups once the process is dead", n), unit: "ms"}, summarize(rm), "p10–p90"))
}

// libraryCgroupCheck runs a sleep job with limits and says which cgroups it
// got: the controllers whose cgroup differs from the harness's own.
func (e *env) libraryCgroupCheck(spool string) string {
	j := tjob.NewJob("sleep", "5")
	j.CPUPercent, j.MemoryMB, j.ReadBPS, j.WriteBPS, j.PidsMax = limCPUPercent, limMemoryMB, limBPS, limBPS, limPids
	j.SpoolDir = spool
	j.GracePeriod = time.Second
	done := j.Run()
	defer func() { j.Close(); <-done }()
	st := j.Summary()
	if st.Error != nil || st.Pid == 0 {
		return fmt.Sprintf("Cgroup check: the sleep job did not start: %v", st.Error)
	}
	return "Cgroup check (library): " + e.describeCgroups(cgroupOf(st.Pid), cgroupOf(os.Getpid()))
}

func (e *env) describeCgroups(job, parent string) string {
	diff := cgroupDiff(job, parent)
	if len(diff) == 0 {
		why := ""
		if b, err := os.ReadFile(filepath.Join(e.repo, "cgroup.go")); err == nil && bytes.Contains(b, []byte("STUB")) {
			why = " (the library's cgroup.go is still the stub: newCgroup makes none)"
		}
		return "**the job ran in its parent's cgroups, not in a cgroup of its own: the limits were not applied**" + why +
			", so the tjob figures here do not include making, filling and removing cgroups, while runc's do."
	}
	return fmt.Sprintf("the job had cgroups of its own in: %s.", strings.Join(diff, ", "))
}

// runcBundle makes a busybox bundle with the same limits and returns a
// function that runs it once, or why runc cannot be measured.
func (e *env) runcBundle() (func() (time.Duration, error), string) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return nil, "runc missing (Debian runc)"
	}
	if !e.root {
		return nil, "needs root"
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, "busybox missing (Debian busybox-static)"
	}
	if f, err := elf.Open(bb); err != nil {
		return nil, "busybox: " + err.Error()
	} else {
		dynamic := false
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				dynamic = true
			}
		}
		f.Close()
		if dynamic {
			return nil, bb + " is linked dynamically: a rootfs needs busybox-static"
		}
	}
	bundle := filepath.Join(e.work, "runc-bundle")
	state := filepath.Join(e.work, "runc-state")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		return nil, err.Error()
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return nil, err.Error()
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		return nil, err.Error()
	}
	for _, l := range []string{"true", "sh", "sleep"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", l))
	}
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("runc spec: %v: %s", err, out)
	}
	cfgFile := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(cfgFile)
	if err != nil {
		return nil, err.Error()
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, "runc spec: " + err.Error()
	}
	proc, _ := cfg["process"].(map[string]any)
	linux, _ := cfg["linux"].(map[string]any)
	if proc == nil || linux == nil {
		return nil, "runc spec: no process or linux section"
	}
	proc["terminal"] = false
	proc["args"] = []string{"/bin/true"}
	if root, ok := cfg["root"].(map[string]any); ok {
		root["readonly"] = true
	}
	mem := map[string]any{"limit": limMemoryMB << 20}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		mem["swap"] = limMemoryMB << 20
	}
	res := map[string]any{
		"memory": mem,
		"cpu":    map[string]any{"quota": limCPUPercent * 1000, "period": 100000},
		"pids":   map[string]any{"limit": limPids},
	}
	if maj, mnr, err := rootDisk(); err == nil {
		dev := []map[string]any{{"major": maj, "minor": mnr, "rate": limBPS}}
		res["blockIO"] = map[string]any{"throttleReadBpsDevice": dev, "throttleWriteBpsDevice": dev}
	}
	linux["resources"] = res
	// A cgroup of a fixed name at the hierarchies' roots: the runs are
	// sequential, and runc removes it after each.
	linux["cgroupsPath"] = "/tjobbench-runc"
	raw, _ = json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgFile, raw, 0o644); err != nil {
		return nil, err.Error()
	}
	i := 0
	run := func() (time.Duration, error) {
		i++
		id := fmt.Sprintf("tjobbench-%d-%d", os.Getpid(), i)
		cmd := exec.Command(runc, "--root", state, "run", "--bundle", bundle, id)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			exec.Command(runc, "--root", state, "delete", "-f", id).Run()
			return d, fmt.Errorf("runc run: %v: %s", err, strings.TrimSpace(out.String()))
		}
		return d, nil
	}
	return run, ""
}

// rootDisk is the whole disk behind /, for blkio throttling.
func rootDisk() (int, int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/", &st); err != nil {
		return 0, 0, err
	}
	maj := int((st.Dev >> 8) & 0xfff)
	mnr := int((st.Dev & 0xff) | ((st.Dev >> 12) & 0xfff00))
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", maj, mnr)
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		if b, err := os.ReadFile(filepath.Join(sys, "..", "dev")); err == nil {
			if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &mnr); err != nil {
				return 0, 0, err
			}
		}
	}
	if _, err := os.Stat(sys); err != nil {
		return 0, 0, errors.New("/ is not on a block device")
	}
	return maj, mnr, nil
}

// startServerFigures: the CLI's whole `tjob run true`, and the Status RPC on
// a reused connection.
func startServerFigures(ctx context.Context, e *env, s *section, libMed float64) error {
	if !e.root {
		s.skipRow("tjob run true (whole CLI process)", "needs root (tjobs runs jails)")
		s.skipRow("Status RPC on a reused mTLS connection", "needs root (tjobs runs jails)")
		return nil
	}
	srv, err := e.startServer(ctx, "start")
	if err != nil {
		return err
	}
	n := 40
	if e.quick {
		n = 10
	}
	var xs []float64
	for i := 0; i < n+3 && ctx.Err() == nil; i++ {
		cmd := exec.Command(e.tjob, e.cliArgs(srv, "run", "true")...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("tjob run true: %v: %s", err, strings.TrimSpace(out.String()))
		}
		if i >= 3 {
			xs = append(xs, float64(d)/float64(time.Millisecond))
		}
	}
	r := fromStats(&row{what: "`tjob run true`: whole CLI process against a running tjobs", unit: "ms",
		anchor: "library Run → Status", ratio: ratioX(summarize(xs).med / libMed)}, summarize(xs), "p10–p90")
	s.add(r)
	s.note("`tjob run` returns once the job has started (the Run RPC answers then), not when `true` has ended; the CLI process pays for its own start, loading certificates, a TCP and TLS 1.3 handshake with client certificates, and the jailed start on the server.")

	c, err := e.dial(ctx, srv)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	id, err := c.run(ctx, "true")
	if err != nil {
		return err
	}
	if _, err := c.waitEnded(ctx, id, 10*time.Second); err != nil {
		return err
	}
	calls := 3000
	if e.quick {
		calls = 300
	}
	var st, hc []float64
	req := &tjobv1.StatusRequest{JobId: &id}
	hreq := &healthpb.HealthCheckRequest{}
	for i := 0; i < calls+100 && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if _, err := c.job.Status(ctx, req); err != nil {
			return fmt.Errorf("Status: %w", err)
		}
		d1 := time.Since(t0)
		t0 = time.Now()
		if _, err := c.health.Check(ctx, hreq); err != nil {
			return fmt.Errorf("health Check: %w", err)
		}
		d2 := time.Since(t0)
		if i >= 100 {
			st = append(st, float64(d1)/float64(time.Microsecond))
			hc = append(hc, float64(d2)/float64(time.Microsecond))
		}
	}
	ss, hs := summarize(st), summarize(hc)
	s.add(fromStats(&row{what: "Status RPC (one job), reused mTLS connection: p50", unit: "µs",
		anchor: fmt.Sprintf("gRPC health Check p50 %.0f µs", hs.med), ratio: ratioX(ss.med / hs.med)}, ss, "p10–p90"))
	s.add(single(&row{what: "Status RPC (one job), reused mTLS connection: p99", unit: "µs",
		anchor: fmt.Sprintf("gRPC health Check p99 %.0f µs", hs.p99), ratio: ratioX(ss.p99 / hs.p99)}, ss.p99))
	s.rows[len(s.rows)-1].n = ss.n
	s.note("The Status anchor is the standard gRPC health Check on the same connection, called alternately with Status: the cost of gRPC, HTTP/2 and TLS on this machine with nothing of tjob in it. tjobs logs one line per RPC to its standard error (a file here) for both.")
	return nil
}

// blockedStack runs f on a thread of its own and samples that thread's
// kernel stack while f runs: where f blocks in the kernel.
func blockedStack(f func() error) (string, error) {
	tid := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- syscall.Gettid()
		done <- f()
	}()
	file := fmt.Sprintf("/proc/self/task/%d/stack", <-tid)
	var best string
	for {
		select {
		case err := <-done:
			return best, err
		default:
		}
		if b, err := os.ReadFile(file); err == nil && strings.Count(string(b), "\n") > strings.Count(best, "\n") {
			best = string(b)
		}
	}
}
