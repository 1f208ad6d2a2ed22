package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const startIntro = "Wall time to run `/bin/true` to its end, measured in the harness process. " +
	"The exec-based rows time `os/exec` Start to Wait; the tjob rows time `Job.Run` to the final Status on its channel " +
	"(the library in-process, spool in the same scratch directory, its init the `tjob-init` built beside the harness). " +
	"The row with targets runs the job as tjobs runs every job: in a user namespace of its own (65,536 IDs from host ID 1,000,000,000), " +
	"its seccomp filter and dropped capabilities, a read-only root and a workspace of its own as `/tmp`, with the limits below. " +
	"All of them run round-robin, after 3 warm-up runs each. " +
	"Limits, for tjob and runc alike, are the RFD's: CPU 20% of one CPU, memory 20 MiB (swap off where accounted), " +
	"20 MiB/s read and write on the root disk, 1024 pids.\n\n" +
	"Where a jailed start with limits goes is measured by the library's own benchmarks: " +
	"`go test -run '^$' -bench '^Benchmark(Start|CgroupV1)$' .` as root in the repository's root. " +
	"BenchmarkStart (start_test.go) starts the same job without the jail or a cgroup (`job/plain`, the library's bare exec path), " +
	"with either (`job/jail`, `job/cgroup`), with both (`job/jail+cgroup`) and as tjobs runs it (`job/as-tjobs`), next to os/exec, unshare and bwrap; " +
	"BenchmarkCgroupV1 (cgroup_bench_test.go) times the kernel's part of a job's cgroups on cgroup v1, without tjob: " +
	"making them, moving a process into them (which waits for an RCU grace period unless a hierarchy is mounted with `favordynmods`) and removing them."

// The RFD's limits, as the tjobs server applies them.
const (
	limCPUPercent = 20
	limMemoryMB   = 20
	limBPS        = 20 << 20
	limPids       = 1024
)

// limit gives j the RFD's limits.
func limit(j *tjob.Job) {
	j.CPUPercent, j.MemoryMB, j.ReadBPS, j.WriteBPS, j.PidsMax = limCPUPercent, limMemoryMB, limBPS, limBPS, limPids
}

// variant is one way to run /bin/true, timed round-robin with the others.
type variant struct {
	name   string
	run    func() (time.Duration, error)
	skip   string    // why it is not measured here
	xs     []float64 // ms
	failed error     // it failed after the warm-up; xs holds what came before
}

func (v *variant) measured() bool { return v.skip == "" && len(v.xs) > 0 }

// median is the variant's median in ms, NaN when it was not measured.
func (v *variant) median() float64 {
	if v.skip != "" {
		return math.NaN()
	}
	return median(v.xs)
}

// startVariants are the section's ways to run /bin/true, by role.
type startVariants struct {
	// The tools one would otherwise use; exec is every row's anchor.
	exec, unshare, bwrap, runc *variant
	// Go programs that exit at once: what the start of a jail's init, a Go
	// program too, costs.
	noop, self, init *variant
	// A tjob job as tjobs runs it: the figure with targets; and one in the
	// library's default jail, with no user namespace (one Go program fewer
	// to start: see jobinit's spawner).
	job, jobNoUserNS *variant
}

// all lists the variants in the report's order.
func (vs *startVariants) all() []*variant {
	return []*variant{vs.exec, vs.unshare, vs.bwrap, vs.runc, vs.noop, vs.self, vs.init, vs.jobNoUserNS, vs.job}
}

func (e *env) startVariants(spool string) *startVariants {
	vs := &startVariants{
		exec:    execVariant("plain os/exec of /bin/true", "/bin/true"),
		unshare: execVariant("unshare -pfmnu --mount-proc true", "unshare", "-pfmnu", "--mount-proc", "true"),
		bwrap:   execVariant("bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev true", "bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"),
		runc:    &variant{name: "runc run, busybox bundle, same limits"},
		noop:    execVariant("for reference: os/exec of an empty Go program (bench/noop): a Go runtime start alone", e.noop),
		self: execVariant("for reference: os/exec of this harness binary, exiting at once (`gen -size 0`): a Go runtime start with all its packages' initialization "+
			"(the library's jail init, this binary, stops in the tjob package's init: it pays at most this)", e.self, "gen", "-size", "0"),
		init: &variant{name: "for reference: os/exec of tjob-init, exiting at once (run by hand, it says it is not for that, exit 2): a Go runtime start, " +
			"which a job pays once, and twice in a user namespace (the spawner, then the init)", run: func() (time.Duration, error) { return timedExit(2, e.initBin()) }},
		jobNoUserNS: &variant{name: "tjob job, limits + the library's default jail, no user namespace", run: func() (time.Duration, error) { return startJob(spool, false) }},
		job:         &variant{name: "tjob job as tjobs runs it: limits, user namespace, read-only root, workspace (library: Run → final Status)", run: func() (time.Duration, error) { return startJob(spool, true) }},
	}
	if e.initBin() == "" {
		vs.init.skip = "no tjob-init beside the harness"
	}
	if e.noop == "" {
		vs.noop.skip = "no -noop binary"
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		vs.unshare.skip = "unshare(1) missing (Debian util-linux)"
	} else if !e.root {
		vs.unshare.skip = "needs root"
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		vs.bwrap.skip = "bwrap missing (Debian bubblewrap)"
	}
	if !e.root {
		vs.job.skip = "needs root (namespaces and cgroups)"
		vs.jobNoUserNS.skip = vs.job.skip
	}
	vs.runc.run, vs.runc.skip = e.runcVariant()
	return vs
}

func execVariant(name, path string, args ...string) *variant {
	return &variant{name: name, run: func() (time.Duration, error) { return timed(exec.Command(path, args...)) }}
}

// startJob runs /bin/true as a tjob job with the RFD's limits, in its jail,
// and returns the time from Run to the final Status. As tjobs, it adds a
// user namespace, a read-only root and a workspace; the workspace is made
// before and removed after the time taken, as tjobs does around Run.
func startJob(spool string, asTjobs bool) (time.Duration, error) {
	j := tjob.NewJob("/bin/true")
	limit(j)
	j.SpoolDir = spool
	if asTjobs {
		ws, err := os.MkdirTemp(filepath.Dir(spool), "workspace-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(ws)
		if err := os.Chown(ws, int(tjobsUserNS.HostID), int(tjobsUserNS.HostID)); err != nil {
			return 0, err
		}
		j.ReadOnlyRoot, j.TmpDir, j.UserNS = true, ws, tjobsUserNS
	}
	t0 := time.Now()
	st := <-j.Run()
	d := time.Since(t0)
	j.Close()
	if st.Error != nil || st.Exit != 0 {
		return d, fmt.Errorf("tjob job: exit %d: %v", st.Exit, st.Error)
	}
	return d, nil
}

// tjobsUserNS is the first block of IDs tjobs gives its jobs by default.
var tjobsUserNS = tjob.IDMap{HostID: 1_000_000_000, Size: 65536}

// initBin is the tjob-init beside the harness, which the library runs as
// the jail's init; "" when there is none.
func (e *env) initBin() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), "tjob-init")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func sectionStart(ctx context.Context, e *env, s *section) error {
	spool := filepath.Join(e.work, "spool-lib") // of the library's jobs
	vs := e.startVariants(spool)
	roundRobin(ctx, vs.all(), e.runs(100, 15), 50*time.Second)
	for _, v := range vs.all() {
		addVariant(s, v, vs.exec)
	}
	if vs.job.measured() {
		startTargets(s, vs)
		s.note("Cgroup check (library): %s", libraryCgroupCheck(spool))
		favordynmodsRows(ctx, e, s, vs)
	}
	if vs.job.median() > 2*vs.unshare.median() && ctx.Err() == nil {
		startInTheWay(s, vs)
		e.profileStarts(ctx, s, spool)
	}
	if ctx.Err() != nil {
		return nil
	}
	return startServerFigures(ctx, e, s, vs.job.median())
}

// startInTheWay says, from this run's figures, what keeps a jailed start
// from its targets and what was tried.
func startInTheWay(s *section, vs *startVariants) {
	job, exec, init, noUserNS := vs.job.median(), vs.exec.median(), vs.init.median(), vs.jobNoUserNS.median()
	if math.IsNaN(job) || math.IsNaN(init) || math.IsNaN(exec) || math.IsNaN(noUserNS) {
		return
	}
	runtimeStart := init - exec // a Go runtime's start, over an exec of /bin/true
	s.note("What is in the way: the jail's init is a Go program, and a job in a user namespace starts two of them, the spawner and the init "+
		"(jobinit's spawner: Go forks into a new user namespace only by a full fork of the forking process, which tjobs cannot afford). "+
		"A Go runtime's start costs %.1f ms here over an exec of /bin/true (tjob-init exiting at once, above), so the two take %.1f ms of the job's %.2f ms; "+
		"without the user namespace, one Go program fewer, the job starts in %.2f ms. In the profile below, that start is the runtime's own: "+
		"`runtime.schedinit` and `mallocgc` faulting in a fresh heap, and `internal/cpu` reading CPUID, which traps to the hypervisor on this machine. "+
		"Tried, and kept: the init as a small binary of its own rather than the running program re-executed (the harness binary exiting at once, above, shows what that saves), "+
		"one P and a tight heap for the init, the seccomp program compiled once per process, a start queue in tjobs. "+
		"Not tried: an init that is not a Go program (as docker-init and catatonit are C), or a long-lived helper that forks inits, "+
		"either of which would take one or both Go starts out of every job.", runtimeStart, 2*runtimeStart, job, noUserNS)
}

// profileStarts adds a profile of 40 jailed starts with limits.
func (e *env) profileStarts(ctx context.Context, s *section, spool string) {
	title := "Profile: 40 jailed starts with limits (the harness and its children: `tjobbench` is the library; `5`, `exe` and `tjob-init` the jail's init, " +
		"whose threads keep the names it was run by, /proc/self/fd/5 and, re-executed, /proc/self/exe, but for the main one, which names itself; " +
		"and the command it forks, until that execs)"
	e.addProfile(ctx, s, "start", title, []string{"-p", strconv.Itoa(os.Getpid())}, func() error {
		for range 40 {
			if _, err := startJob(spool, true); err != nil {
				return err
			}
		}
		return nil
	})
}

// roundRobin warms each variant up, skipping those that fail here, then
// runs them in turn n times, or until ctx ends or limit has passed.
func roundRobin(ctx context.Context, vs []*variant, n int, limit time.Duration) {
	for _, v := range vs {
		for i := 0; i < 3 && v.skip == ""; i++ {
			if _, err := v.run(); err != nil {
				v.skip = "fails here: " + err.Error()
			}
		}
	}
	deadline := time.Now().Add(limit)
	for i := 0; i < n && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		for _, v := range vs {
			v.once()
		}
	}
}

// once runs v once and keeps its time, unless it is skipped or has failed.
func (v *variant) once() {
	if v.skip != "" || v.failed != nil {
		return
	}
	d, err := v.run()
	if err != nil {
		v.failed = err
		return
	}
	v.xs = append(v.xs, ms(d))
}

// addVariant adds v's row, compared with anchor's.
func addVariant(s *section, v, anchor *variant) {
	if v.skip != "" {
		s.skipRow(v.name, v.skip)
		return
	}
	if v.failed != nil {
		s.note("%s failed during the runs: %v", v.name, v.failed)
	}
	r := &row{what: v.name, unit: "ms"}
	if v != anchor {
		r.anchor, r.ratio = "plain os/exec", ratioX(v.median()/anchor.median())
	}
	s.add(fromStats(r, summarize(v.xs), "p10–p90"))
}

// startTargets adds the rows that hold the job's start to its targets:
// at most twice unshare's, at least five times faster than runc.
func startTargets(s *section, vs *startVariants) {
	job, unshare, bwrap, runc := vs.job.median(), vs.unshare.median(), vs.bwrap.median(), vs.runc.median()
	if math.IsNaN(bwrap) {
		s.skipRow("tjob job vs bwrap", "no bwrap figure: "+vs.bwrap.skip)
	} else {
		s.add(fromStats(&row{what: "tjob job vs bwrap", unit: "ms", anchor: fmt.Sprintf("bwrap %.2f ms", bwrap),
			ratio: ratioX(job/bwrap) + " of bwrap", target: "faster than bwrap", met: yesNo(job < bwrap)}, summarize(vs.job.xs), "p10–p90"))
	}
	if math.IsNaN(unshare) {
		s.skipRow("tjob job vs unshare", "no unshare figure")
	} else {
		s.add(fromStats(&row{what: "tjob job vs unshare", unit: "ms", anchor: fmt.Sprintf("unshare %.2f ms", unshare),
			ratio: ratioX(job/unshare) + " of unshare", target: "≤ 2× unshare", met: yesNo(job <= 2*unshare)}, summarize(vs.job.xs), "p10–p90"))
	}
	if math.IsNaN(runc) {
		s.skipRow("tjob job vs runc", "no runc figure: "+vs.runc.skip)
	} else {
		s.add(fromStats(&row{what: "tjob job vs runc", unit: "ms", anchor: fmt.Sprintf("runc %.2f ms", runc),
			ratio: "runc takes " + ratioX(runc/job), target: "≥ 5× faster than runc", met: yesNo(runc >= 5*job)}, summarize(vs.job.xs), "p10–p90"))
	}
}

// libraryCgroupCheck runs a sleep job with limits and says which cgroups it
// got: the limits mean nothing without a cgroup of its own.
func libraryCgroupCheck(spool string) string {
	j := tjob.NewJob("sleep", "5")
	limit(j)
	j.SpoolDir = spool
	j.GracePeriod = time.Second
	done := j.Run()
	defer func() { j.Close(); <-done }()
	st := j.Summary()
	if st.Error != nil || st.Pid == 0 {
		return fmt.Sprintf("the sleep job did not start: %v", st.Error)
	}
	return describeCgroups(st.Pid, os.Getpid())
}

// describeCgroups says in which hierarchies a job's process pid has a
// cgroup of its own, rather than its parent's.
func describeCgroups(pid, parent int) string {
	own := ownCgroups(pid, parent)
	if len(own) == 0 {
		return "**the job ran in its parent's cgroups, not in a cgroup of its own: the limits were not applied**, " +
			"so the tjob figures here do not include making, filling and removing cgroups, while runc's do."
	}
	slices.Sort(own)
	return fmt.Sprintf("the job had cgroups of its own in: %s.", strings.Join(own, ", "))
}

// startServerFigures: the CLI's whole `tjob run true`, and the Status RPC on
// a reused connection, next to the gRPC health Check on it.
func startServerFigures(ctx context.Context, e *env, s *section, libMed float64) error {
	if !e.root {
		s.skipRow("tjob run true (whole CLI process)", "needs root (tjobs runs jails)")
		s.skipRow("Status RPC on a reused mTLS connection", "needs root (tjobs runs jails)")
		return nil
	}
	srv, c, err := e.connect(ctx, "start")
	if err != nil {
		return err
	}
	defer c.conn.Close()
	var xs []float64
	for i := 0; i < e.runs(40, 10)+3 && ctx.Err() == nil; i++ {
		d, err := timed(exec.Command(e.tjob, e.cliArgs(srv.addr, "run", "true")...))
		if err != nil {
			return err
		}
		if i >= 3 { // warm-up
			xs = append(xs, ms(d))
		}
	}
	s.add(fromStats(&row{what: "`tjob run true`: whole CLI process against a running tjobs", unit: "ms",
		anchor: "library Run → Status", ratio: ratioX(summarize(xs).med / libMed)}, summarize(xs), "p10–p90"))
	s.note("`tjob run` returns once the job has started (the Run RPC answers then), not when `true` has ended; the CLI process pays for its own start, " +
		"loading certificates, a TCP and TLS 1.3 handshake with client certificates, and the jailed start on the server.")
	return statusLatency(ctx, e, s, c)
}

// statusLatency times the Status RPC of one ended job, alternately with the
// standard gRPC health Check on the same connection.
func statusLatency(ctx context.Context, e *env, s *section, c *client) error {
	id, err := c.run(ctx, "true")
	if err != nil {
		return err
	}
	if _, err := c.waitEnded(ctx, id, 10*time.Second); err != nil {
		return err
	}
	req := &tjobv1.StatusRequest{JobId: &id}
	hreq := &healthpb.HealthCheckRequest{}
	var status, health []float64
	for i := 0; i < e.runs(3000, 300)+100 && ctx.Err() == nil; i++ {
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
		if i >= 100 { // warm-up
			status = append(status, float64(d1)/float64(time.Microsecond))
			health = append(health, float64(d2)/float64(time.Microsecond))
		}
	}
	st, hc := summarize(status), summarize(health)
	s.add(fromStats(&row{what: "Status RPC (one job), reused mTLS connection: p50", unit: "µs",
		anchor: fmt.Sprintf("gRPC health Check p50 %.0f µs", hc.med), ratio: ratioX(st.med / hc.med)}, st, "p10–p90"))
	p99 := single(&row{what: "Status RPC (one job), reused mTLS connection: p99", unit: "µs",
		anchor: fmt.Sprintf("gRPC health Check p99 %.0f µs", hc.p99), ratio: ratioX(st.p99 / hc.p99)}, st.p99)
	p99.n = st.n
	s.add(p99)
	s.note("The Status anchor is the standard gRPC health Check on the same connection, called alternately with Status: the cost of gRPC, HTTP/2 and TLS " +
		"on this machine with nothing of tjob in it. tjobs logs one line per RPC to its standard error (a file here) for both.")
	return nil
}

// timedExit is the wall time of path run with no arguments, which must
// exit with code.
func timedExit(code int, path string) (time.Duration, error) {
	cmd := exec.Command(path)
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != code {
		return d, fmt.Errorf("%s: want exit %d: %v", filepath.Base(path), code, err)
	}
	return d, nil
}
