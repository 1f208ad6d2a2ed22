// Command tjobbench measures tjob against the tools one would otherwise use,
// on this machine, and writes docs/BENCHMARKS.md. bench/run.sh (make bench)
// builds it with tjobs and tjob, makes certificates, and runs it.
//
//	tjobbench -tjobs BIN -tjob BIN -certs DIR -work DIR -out FILE [-quick] [-only LIST]
//
// It is also the benchmarks' own tools, as subcommands:
//
//	tjobbench gen -size BYTES [-delay D]   writes a known byte stream to stdout
//	tjobbench tlscat -addr A -ca -cert -key  copies a TLS connection to stdout
//
// It imports the tjob library, so the library's jail runs this binary as the
// jail's init for the in-process jobs.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "gen":
			os.Exit(genMain(os.Args[2:]))
		case "tlscat":
			os.Exit(tlscatMain(os.Args[2:]))
		case "grpccat":
			os.Exit(grpccatMain(os.Args[2:]))
		case "logserver":
			os.Exit(logserverMain(os.Args[2:]))
		}
	}
	os.Exit(benchMain(os.Args[1:]))
}

// env is what every section needs.
type env struct {
	tjobs, tjob, self string // binaries
	noop              string // an empty Go program
	certs, work       string
	repo              string
	quick             bool
	perf              string // perf(1), or "" when missing
	root              bool
	pidFile           string
	rep               *report

	mu      sync.Mutex
	servers []*tjobsServer
}

type sectionFunc func(ctx context.Context, e *env, s *section) error

func benchMain(args []string) int {
	fs := flag.NewFlagSet("tjobbench", flag.ContinueOnError)
	e := &env{rep: &report{}}
	fs.StringVar(&e.tjobs, "tjobs", "", "tjobs `binary`")
	fs.StringVar(&e.tjob, "tjob", "", "tjob CLI `binary`")
	fs.StringVar(&e.noop, "noop", "", "an empty Go program's `binary` (bench/noop)")
	fs.StringVar(&e.certs, "certs", "", "`dir` made by tjobs certs")
	fs.StringVar(&e.work, "work", "", "scratch `dir`, removed by the caller")
	fs.StringVar(&e.repo, "repo", ".", "the repository, for its commit")
	fs.StringVar(&e.pidFile, "pidfile", "", "append the pid of every server started to `file`")
	out := fs.String("out", "docs/BENCHMARKS.md", "report `file`")
	only := fs.String("only", "", "comma-separated sections to run (start,capture,stream,fanout,memory,scale)")
	budget := fs.Duration("budget", 8*time.Minute, "stop measuring after this long")
	fs.BoolVar(&e.quick, "quick", false, "fewer runs, smaller counts: to try the harness, not for the report")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, f := range []struct{ name, v string }{{"-tjobs", e.tjobs}, {"-tjob", e.tjob}, {"-certs", e.certs}, {"-work", e.work}} {
		if f.v == "" {
			fmt.Fprintf(os.Stderr, "tjobbench: %s is required\n", f.name)
			return 2
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tjobbench:", err)
		return 1
	}
	e.self = self
	e.root = os.Geteuid() == 0
	if p, err := exec.LookPath("perf"); err == nil {
		e.perf = p
	}

	started := time.Now()
	sigCtx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, cancelBudget := context.WithTimeout(sigCtx, *budget)
	defer cancelBudget()
	defer e.stopServers()

	e.machine()
	loadStart := loadavg()
	sections := []struct {
		key   string
		title string
		intro string
		f     sectionFunc
		share time.Duration // most of the budget this section may take
	}{
		{"start", "1. Start latency: /bin/true", startIntro, sectionStart, 75 * time.Second},
		{"capture", "2. Output capture: 1 GiB to stdout", captureIntro, sectionCapture, 60 * time.Second},
		{"stream", "3. Streaming: tjob logs of 1 GiB", streamIntro, sectionStream, 110 * time.Second},
		{"fanout", "4. Fan-out: followers of a 100 MiB job", fanoutIntro, sectionFanout, 150 * time.Second},
		{"memory", "5. Memory: tjobs RSS, and the jail's own", memoryIntro, sectionMemory, 150 * time.Second},
		{"scale", "6. Scale: 1000 concurrent sleep jobs", scaleIntro, sectionScale, 120 * time.Second},
	}
	want := map[string]bool{}
	for _, k := range strings.Split(*only, ",") {
		if k != "" {
			want[k] = true
		}
	}
	failed := false
	for _, sec := range sections {
		if len(want) > 0 && !want[sec.key] {
			continue
		}
		s := e.rep.section(sec.title, sec.intro)
		if ctx.Err() != nil {
			s.err = fmt.Errorf("not run: %w", context.Cause(ctx))
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: == %s\n", sec.title)
		t0 := time.Now()
		sctx, scancel := context.WithTimeout(ctx, sec.share)
		err := runSection(sctx, e, s, sec.f)
		scancel()
		s.took = time.Since(t0)
		e.stopServers()
		if err != nil {
			s.err = err
			failed = true
			fmt.Fprintf(os.Stderr, "bench: %s: FAILED: %v\n", sec.title, err)
		}
	}
	e.rep.machine = append(e.rep.machine, [2]string{"load average at start / end", loadStart + " / " + loadavg()})
	e.rep.machine = append(e.rep.machine, [2]string{"harness run time", time.Since(started).Round(time.Second).String() + " (measuring; builds and apt-get come on top)"})

	if sigCtx.Err() != nil {
		// A report cut short by Ctrl-C must not replace a whole one.
		fmt.Fprintf(os.Stderr, "bench: interrupted: %s not written\n", *out)
		return 130
	}
	header := fmt.Sprintf("# Benchmarks\n\nGenerated by `make bench` (`bench/run.sh`, `bench/*.go`) on %s. **Do not edit by hand**: run `make bench` again.\nEach figure is the median of N runs with its spread; the ratio compares it with its anchor, measured in the same run on the same machine.\n",
		started.UTC().Format("2006-01-02 15:04 UTC"))
	if e.quick {
		header += "\n> **Quick run (`-quick`)**: few runs and small counts; not the figures of record.\n"
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
		err = os.WriteFile(*out, []byte(e.rep.markdown(header)), 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tjobbench:", err)
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", *out)
	if failed {
		return 1
	}
	return 0
}

func runSection(ctx context.Context, e *env, s *section, f sectionFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			err = fmt.Errorf("panic: %v\n%s", p, buf)
		}
	}()
	err = f(ctx, e, s)
	if err == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		s.note("The section's time budget ran out: some figures have fewer runs than planned.")
	}
	return err
}

func (e *env) stopServers() {
	e.mu.Lock()
	all := e.servers
	e.servers = nil
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(s.stop)
	}
	wg.Wait()
}

func (e *env) recordPid(pid int) {
	if e.pidFile == "" {
		return
	}
	f, err := os.OpenFile(e.pidFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintln(f, pid)
	f.Close()
}

// machine records what the figures were measured on.
func (e *env) machine() {
	m := &e.rep.machine
	add := func(k, v string) { *m = append(*m, [2]string{k, v}) }
	add("CPUs (nproc)", fmt.Sprint(runtime.NumCPU()))
	if kv, err := kbFields("/proc/meminfo", "MemTotal"); err == nil {
		add("memory", fmt.Sprintf("%.1f GiB", kv["MemTotal"]/(1<<20)))
	}
	add("CPU model", cpuModel())
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		add("kernel", fmt.Sprintf("%s %s %s", cstr(u.Sysname[:]), cstr(u.Release[:]), cstr(u.Machine[:])))
	}
	add("cgroups", cgroupMode())
	add("Go", runtime.Version())
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				add("OS", strings.Trim(v, `"`))
			}
		}
	}
	add("root", yesNo(e.root))
	add("tree", treeState(e.repo))
	tools := []string{}
	for _, t := range []string{"unshare", "bwrap", "runc", "busybox", "perf"} {
		if p, err := exec.LookPath(t); err == nil {
			v := toolVersion(t, p)
			tools = append(tools, fmt.Sprintf("%s %s", t, v))
		} else {
			tools = append(tools, t+" (missing)")
		}
	}
	add("tools", strings.Join(tools, "; "))
}

// loadavg is the 1-minute load average, and the processes other than the
// harness's that used the most CPU in the last second: the benchmarks
// share the machine with them.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	s := f[0]
	if busy := busiest(time.Second); busy != "" {
		s += " (busiest other processes over 1 s: " + busy + ")"
	}
	return s
}

// busiest names the processes outside the harness that used ≥ 5% of a CPU
// over d.
func busiest(d time.Duration) string {
	snap := func() map[int]float64 {
		m := map[int]float64{}
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, dir := range dirs {
			pid, err := strconv.Atoi(filepath.Base(dir))
			if err != nil {
				continue
			}
			if c, err := cpuSeconds(pid); err == nil {
				m[pid] = c
			}
		}
		return m
	}
	a := snap()
	time.Sleep(d)
	b := snap()
	self := os.Getpid()
	type pc struct {
		name string
		pct  float64
	}
	var out []pc
	for pid, c := range b {
		if pid == self {
			continue
		}
		if p := (c - a[pid]) / d.Seconds() * 100; p >= 5 && a[pid] > 0 {
			name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			out = append(out, pc{strings.TrimSpace(string(name)), p})
		}
	}
	slices.SortFunc(out, func(x, y pc) int { return cmp.Compare(y.pct, x.pct) })
	var parts []string
	for _, p := range out {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", p.name, p.pct))
	}
	return strings.Join(parts, ", ")
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// cgroupMode tells v2, v1 and hybrid apart from the mounts.
func cgroupMode() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "?"
	}
	var v1 []string
	v2 := ""
	for _, l := range strings.Split(string(b), "\n") {
		_, after, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(after)
		pre := strings.Fields(l)
		if len(f) < 3 || len(pre) < 5 {
			continue
		}
		switch f[0] {
		case "cgroup2":
			v2 = pre[4]
		case "cgroup":
			v1 = append(v1, filepath.Base(pre[4]))
		}
	}
	switch {
	case len(v1) > 0 && v2 != "":
		ctrls, _ := os.ReadFile(filepath.Join(v2, "cgroup.controllers"))
		c := strings.TrimSpace(string(ctrls))
		if c == "" {
			c = "none"
		}
		return fmt.Sprintf("hybrid: v1 hierarchies %s; v2 at %s with controllers: %s", strings.Join(v1, ","), v2, c)
	case len(v1) > 0:
		return "v1: " + strings.Join(v1, ",")
	case v2 != "":
		return "v2 at " + v2
	}
	return "none mounted"
}

func treeState(repo string) string {
	head, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "?"
	}
	st, _ := exec.Command("git", "-C", repo, "status", "--porcelain").Output()
	var mod, untracked []string
	for _, l := range strings.Split(string(st), "\n") {
		if len(l) < 4 {
			continue
		}
		if strings.HasPrefix(l, "??") {
			untracked = append(untracked, strings.TrimSpace(l[3:]))
		} else {
			mod = append(mod, strings.TrimSpace(l[3:]))
		}
	}
	s := "commit " + strings.TrimSpace(string(head))
	if len(mod)+len(untracked) > 0 {
		s += " with the working tree as it was (work in progress):"
		if len(mod) > 0 {
			s += " modified " + strings.Join(mod, " ")
		}
		if len(untracked) > 0 {
			s += "; untracked " + strings.Join(untracked, " ")
		}
	}
	return s
}

func toolVersion(name, path string) string {
	var out []byte
	switch name {
	case "busybox":
		out, _ = exec.Command(path).Output()
	case "perf":
		out, _ = exec.Command(path, "version").Output()
	default:
		out, _ = exec.Command(path, "--version").CombinedOutput()
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	first = strings.TrimSpace(first)
	for _, p := range []string{"unshare from ", "bubblewrap ", "runc version ", "perf version "} {
		first = strings.TrimPrefix(first, p)
	}
	if len(first) > 40 {
		first = first[:40]
	}
	return first
}

// wait sleeps for d unless ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
