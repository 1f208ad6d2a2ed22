// Command tjobbench measures tjob next to the tools one would otherwise use
// (unshare, bwrap, runc, a raw TLS copy), on this machine, and writes
// docs/BENCHMARKS.md. bench/run.sh (make bench) builds it with tjobs and
// tjob, makes certificates, and runs it.
//
//	tjobbench -tjobs BIN -tjob BIN -certs DIR -work DIR -out FILE [-quick] [-only LIST]
//
// What the library does alone, in one process, is measured by the root
// package's testing.B benchmarks instead (BenchmarkStart, BenchmarkCapture,
// ...), where benchstat can compare two trees; the report says which.
//
// It is also the benchmarks' own tools, as subcommands:
//
//	tjobbench gen -size BYTES [-delay D]        writes a known byte stream to stdout
//	tjobbench tlscat -addr A -ca -cert -key     copies a TLS connection to stdout
//	tjobbench grpccat -addr A [-window N] ...   copies a Logs stream to stdout
//	tjobbench logserver -file F -chunk N ...    serves a file as a Logs stream
//
// It imports the tjob library, so the library's jail runs this binary as the
// jail's init for the in-process jobs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
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
		case "tlscat", "grpccat":
			os.Exit(catMain(os.Args[1], os.Args[2:]))
		case "logserver":
			os.Exit(logserverMain(os.Args[2:]))
		case "unfavor":
			os.Exit(unfavorMain())
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

	mu      sync.Mutex
	servers []*tjobsServer
}

// A section measures one thing and adds its rows and notes to s.
type sectionFunc func(ctx context.Context, e *env, s *section) error

// sections are the report's, in order.
var sections = []struct {
	key   string // for -only
	title string
	intro string
	run   sectionFunc   // nil: the intro says where its figures come from
	share time.Duration // the most of the budget it may take
	root  string        // why it needs root; "" when its rows say for themselves
}{
	{"start", "1. Start latency: /bin/true", startIntro, sectionStart, 75 * time.Second, ""},
	{"capture", "2. Output capture: 1 GiB to stdout", captureIntro, sectionCapture, 150 * time.Second, ""},
	{"stream", "3. Streaming: tjob logs of 1 GiB", streamIntro, sectionStream, 110 * time.Second, "tjobs runs jails"},
	{"fanout", "4. Fan-out: followers of a 100 MiB job", fanoutIntro, sectionFanout, 200 * time.Second, "tjobs runs jails"},
	{"memory", "5. Memory: tjobs RSS, and the jail's own", memoryIntro, sectionMemory, 150 * time.Second, "tjobs runs jails"},
	{"scale", "6. Scale: 1000 concurrent sleep jobs", scaleIntro, sectionScale, 170 * time.Second, "tjobs runs jails"},
}

func benchMain(args []string) int {
	fs := flag.NewFlagSet("tjobbench", flag.ContinueOnError)
	e := &env{}
	fs.StringVar(&e.tjobs, "tjobs", "", "tjobs `binary`")
	fs.StringVar(&e.tjob, "tjob", "", "tjob CLI `binary`")
	fs.StringVar(&e.noop, "noop", "", "an empty Go program's `binary` (bench/noop)")
	fs.StringVar(&e.certs, "certs", "", "`dir` made by tjobs certs")
	fs.StringVar(&e.work, "work", "", "scratch `dir`, removed by the caller")
	fs.StringVar(&e.repo, "repo", ".", "the repository, for its commit")
	fs.StringVar(&e.pidFile, "pidfile", "", "append the pid of every server started to `file`")
	out := fs.String("out", "docs/BENCHMARKS.md", "report `file`")
	only := fs.String("only", "", "comma-separated sections to run (start,capture,stream,fanout,memory,scale)")
	budget := fs.Duration("budget", 10*time.Minute, "stop measuring after this long")
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

	rep := &report{machine: e.machine()}
	loadStart := loadavg()
	failed := e.runSections(ctx, rep, *only)
	rep.machine = append(rep.machine,
		[2]string{"load average at start / end", loadStart + " / " + loadavg()},
		[2]string{"harness run time", time.Since(started).Round(time.Second).String() + " (measuring; builds and apt-get come on top)"})

	if sigCtx.Err() != nil {
		// A report cut short by Ctrl-C must not replace a whole one.
		fmt.Fprintf(os.Stderr, "bench: interrupted: %s not written\n", *out)
		return 130
	}
	if err := writeReport(*out, rep.markdown(header(started, e.quick))); err != nil {
		fmt.Fprintln(os.Stderr, "tjobbench:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", *out)
	if failed {
		return 1
	}
	return 0
}

// runSections runs the sections -only names (all when empty), each within
// its share of what is left of ctx, and reports whether any failed.
func (e *env) runSections(ctx context.Context, rep *report, only string) (failed bool) {
	want := map[string]bool{}
	for _, k := range strings.Split(only, ",") {
		if k != "" {
			want[k] = true
		}
	}
	for _, sec := range sections {
		if len(want) > 0 && !want[sec.key] {
			continue
		}
		s := rep.section(sec.title, sec.intro)
		if sec.run == nil {
			continue
		}
		if sec.root != "" && !e.root {
			s.skipRow(shortTitle(sec.title), "needs root ("+sec.root+")")
			continue
		}
		if ctx.Err() != nil {
			s.err = fmt.Errorf("not run: %w", context.Cause(ctx))
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: == %s\n", sec.title)
		t0 := time.Now()
		sctx, scancel := context.WithTimeout(ctx, sec.share)
		err := runSection(sctx, e, s, sec.run)
		scancel()
		s.took = time.Since(t0)
		e.stopServers()
		if err != nil {
			s.err = err
			failed = true
			fmt.Fprintf(os.Stderr, "bench: %s: FAILED: %v\n", sec.title, err)
		}
	}
	return failed
}

// runSection runs one section; a panic in it fails the section, not the
// report.
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

func header(started time.Time, quick bool) string {
	h := fmt.Sprintf("# Benchmarks\n\nGenerated by `make bench` (`bench/run.sh`, `bench/*.go`) on %s. **Do not edit by hand**: run `make bench` again.\n"+
		"Each figure is the median of N runs with its spread; the ratio compares it with its anchor, measured in the same run on the same machine. "+
		"What the library does alone, in one process, is measured by its own benchmarks (`go test -bench`; each section says which), "+
		"which benchstat can compare between two trees.\n",
		started.UTC().Format("2006-01-02 15:04 UTC"))
	if quick {
		h += "\n> **Quick run (`-quick`)**: few runs and small counts; not the figures of record.\n"
	}
	return h
}

func writeReport(file, text string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, []byte(text), 0o644)
}

// runs is how many times to measure: fewer with -quick.
func (e *env) runs(full, quick int) int {
	if e.quick {
		return quick
	}
	return full
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

// wait sleeps for d unless ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// timed runs cmd, its stdout to /dev/null, and returns its wall time. Its
// stderr goes to a file, which says why when it fails: no pipe and no
// copying goroutine, so that nothing but the command is timed.
func timed(cmd *exec.Cmd) (time.Duration, error) {
	stderr, err := os.CreateTemp("", "tjobbench-stderr-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(stderr.Name())
	defer stderr.Close()
	cmd.Stderr = stderr
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return d, fmt.Errorf("%s: %v: %s", filepath.Base(cmd.Path), err, strings.TrimSpace(string(msg)))
	}
	return d, nil
}

// ms is d in milliseconds, the unit of most rows.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
