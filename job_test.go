//go:build linux

package tjob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/neildo/tjob/internal/testkit"
)

// The tests run real processes in real namespaces and cgroups, so most need
// root. They skip, saying so, where it is missing.

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: jobs run in namespaces and cgroups of their own")
	}
}

// newTestJob is a job whose output lives in the test's temp dir and which is
// closed when the test ends.
func newTestJob(t testing.TB, path string, args ...string) *Job {
	t.Helper()
	j := NewJob(path, args...)
	j.SpoolDir = t.TempDir()
	t.Cleanup(func() { j.Close() })
	return j
}

// final waits for the final Status, failing the test if it takes absurdly
// long (a hang, not a speed goal).
func final(t testing.TB, ch <-chan Status) Status {
	t.Helper()
	select {
	case st, ok := <-ch:
		if !ok {
			t.Fatal("status channel closed without a Status")
		}
		if _, more := <-ch; more {
			t.Fatal("status channel delivered twice")
		}
		return st
	case <-time.After(2 * time.Minute):
		t.Fatal("job did not end")
	}
	return Status{}
}

func runShell(t testing.TB, script string) (*Job, Status) {
	t.Helper()
	j := newTestJob(t, "sh", "-c", script)
	return j, final(t, j.Run())
}

func readAll(t testing.TB, j *Job, follow bool) []byte {
	t.Helper()
	r, err := j.Output(context.Background(), follow)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExitCode(t *testing.T) {
	requireRoot(t)
	j, st := runShell(t, "echo out; echo err >&2; exit 3")
	if st.State != StateExited || st.Exit != 3 || st.Signal != 0 || st.Error != nil {
		t.Fatalf("status = %+v, want exited with 3", st)
	}
	if got := string(readAll(t, j, false)); got != "out\nerr\n" {
		t.Fatalf("output = %q", got)
	}
	if st.Started == 0 || st.Stopped < st.Started || st.Elapsed <= 0 || st.Pid == 0 {
		t.Fatalf("times or pid missing: %+v", st)
	}
	if st.Cmd != "sh -c echo out; echo err >&2; exit 3" {
		t.Fatalf("Cmd = %q", st.Cmd)
	}
	if s := j.Status(); s.Exit != 3 || len(s.Lines) != 2 || s.Lines[1] != "err" {
		t.Fatalf("Status() = %+v", s)
	}
}

func TestDeathBySignal(t *testing.T) {
	requireRoot(t)
	_, st := runShell(t, "kill -KILL $$")
	if st.Exit != 128+9 || st.Signal != syscall.SIGKILL || st.StopRequested {
		t.Fatalf("status = %+v, want killed by SIGKILL (137)", st)
	}
}

func TestStartFailures(t *testing.T) {
	requireRoot(t)
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		job  func() *Job
		want string
	}{
		{"missing binary", func() *Job { return newTestJob(t, "no-such-command-tjob") }, `"no-such-command-tjob": executable file not found`},
		{"missing absolute path", func() *Job { return newTestJob(t, "/no/such/file") }, "/no/such/file: no such file or directory"},
		{"not executable", func() *Job { return newTestJob(t, notExec) }, notExec + ": permission denied"},
		{"directory", func() *Job { return newTestJob(t, "/tmp") }, "/tmp: permission denied"},
		{"bad working directory", func() *Job { j := newTestJob(t, "true"); j.Dir = "/no/such/dir"; return j }, "chdir /no/such/dir: no such file or directory"},
		{"empty command", func() *Job { return newTestJob(t, "") }, "Path is empty"},
		{"NUL in argument", func() *Job { return newTestJob(t, "echo", "a\x00b") }, "Args[1] contains a NUL byte"},
	} {
		for _, jail := range []bool{true, false} {
			name := tc.name + map[bool]string{true: "/jail", false: "/nojail"}[jail]
			t.Run(name, func(t *testing.T) {
				j := tc.job()
				j.NoJail = !jail
				ch := j.Run()
				// The failure is known when Run returns: the channel is
				// ready at once.
				select {
				case st := <-ch:
					if st.State != StateFailed || st.Exit != -1 || st.Error == nil || !strings.Contains(st.Error.Error(), tc.want) {
						t.Fatalf("status = %+v (error %v), want failed with %q", st, st.Error, tc.want)
					}
				default:
					t.Fatal("Run's channel was not ready after a failed start")
				}
				if s := j.Summary(); s.State != StateFailed {
					t.Fatalf("Summary state = %v", s.State)
				}
				if err := j.Stop(); err != nil {
					t.Fatalf("Stop of a failed job = %v", err)
				}
			})
		}
	}
}

func TestRunTwice(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "true")
	first := final(t, j.Run())
	second := final(t, j.Run())
	if !errors.Is(second.Error, ErrAlreadyStarted) {
		t.Fatalf("second Run error = %v, want ErrAlreadyStarted", second.Error)
	}
	if first.Exit != 0 || j.Summary().Error != nil {
		t.Fatalf("second Run changed the job: %+v", j.Summary())
	}
}

func TestStopIdempotent(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sleep", "1000")
	if err := j.Stop(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Stop before Run = %v, want ErrNotStarted", err)
	}
	ch := j.Run()
	for i := 0; i < 3; i++ {
		if err := j.Stop(); err != nil {
			t.Fatalf("Stop #%d = %v", i, err)
		}
	}
	st := final(t, ch)
	if !st.StopRequested || st.Signal != syscall.SIGTERM || st.Exit != 143 {
		t.Fatalf("status = %+v, want stopped by SIGTERM", st)
	}
	if st.String() != "Exited (143) (stopped)" {
		t.Fatalf("String() = %q", st.String())
	}
}

// A job that ignores SIGTERM is killed once the grace period is over.
func TestStopIgnoringTerm(t *testing.T) {
	requireRoot(t)
	for _, jail := range []bool{true, false} {
		t.Run(map[bool]string{true: "jail", false: "nojail"}[jail], func(t *testing.T) {
			j := newTestJob(t, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
			j.NoJail = !jail
			j.GracePeriod = 300 * time.Millisecond
			ch := j.Run()
			waitOutput(t, j, "ready\n")
			if err := j.Stop(); err != nil {
				t.Fatal(err)
			}
			st := final(t, ch)
			if st.Signal != syscall.SIGKILL || st.Exit != 137 || !st.StopRequested {
				t.Fatalf("status = %+v, want killed by SIGKILL after the grace period", st)
			}
		})
	}
}

// Stop's SIGTERM reaches a job whose own processes take all the CPU its
// cgroup allows, so that the jail's init gets almost none: the job ends by
// SIGTERM, not by the SIGKILL after the grace period. (The init used to
// pass SIGTERM on, and under load it did not get the CPU to in time.)
func TestStopTermReachesStarvedJob(t *testing.T) {
	requireRoot(t)
	for _, jail := range []bool{true, false} {
		t.Run(map[bool]string{true: "jail", false: "nojail"}[jail], func(t *testing.T) {
			// Eight busy loops, then the command waits. The job starts
			// at 50% of a CPU; once its loops run, its quota is cut to
			// 1% here, so that the job is starved when it is stopped.
			// (Started at 1%, the init and the shell alone took over a
			// minute in the emulated VM on a loaded machine.)
			j := newTestJob(t, "sh", "-c", `for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done; echo ready; exec sleep 1000`)
			j.NoJail = !jail
			j.CPUPercent = 50
			j.GracePeriod = time.Second
			ch := j.Run()
			waitOutput(t, j, "ready\n")
			starve(t, j)
			if err := j.Stop(); err != nil {
				t.Fatal(err)
			}
			st := final(t, ch)
			if st.Signal != syscall.SIGTERM || st.Exit != 143 || !st.StopRequested {
				t.Fatalf("status = %+v, want ended by SIGTERM", st)
			}
		})
	}
}

// starve cuts a running job's CPU quota to 1% of a CPU, behind the
// library's back, and waits until the kernel has throttled it twice since.
func starve(t *testing.T, j *Job) {
	t.Helper()
	cg := jobCgroup(t, j).(cgroupDirer)
	dir := cg.dirOf("cpu")
	file, quota := filepath.Join(dir, "cpu.cfs_quota_us"), "1000" // v1, in µs of the 100 ms period
	if _, err := os.Stat(filepath.Join(dir, "cpu.max")); err == nil {
		file, quota = filepath.Join(dir, "cpu.max"), "1000 100000"
	}
	throttled := func() int {
		smp, _ := sampleCPU(cg)
		return smp.throttled
	}
	before := throttled()
	if err := os.WriteFile(file, []byte(quota), 0); err != nil {
		t.Fatalf("starving the job: %v", err)
	}
	if !testkit.Eventually(5*time.Minute, func() bool { return throttled() >= before+2 }) {
		t.Fatalf("the job was not throttled at 1%% (%s)", file)
	}
}

// waitOutput follows the job's output until it holds want.
func waitOutput(t testing.TB, j *Job, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := j.Output(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("waiting for %q in output, got %q: %v", want, got, err)
		}
	}
}

// A grandchild that holds the output pipe open, in a session of its own,
// neither hangs the end of the job nor outlives it.
func TestGrandchildHoldingPipe(t *testing.T) {
	requireRoot(t)
	for _, jail := range []bool{true, false} {
		t.Run(map[bool]string{true: "jail", false: "nojail"}[jail], func(t *testing.T) {
			const marker = "31337"
			j := newTestJob(t, "sh", "-c", "setsid sleep "+marker+" & echo started")
			j.NoJail = !jail
			st := final(t, j.Run())
			if st.Exit != 0 {
				t.Fatalf("status = %+v", st)
			}
			if got := string(readAll(t, j, true)); got != "started\n" {
				t.Fatalf("output = %q", got)
			}
			if j.NoCgroup && !jail {
				return // nothing can find a process that left the group
			}
			assertNoProcess(t, "sleep", marker)
		})
	}
}

// assertNoProcess fails when a host process runs with exactly these
// arguments.
func assertNoProcess(t testing.TB, args ...string) {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	// A killed process may take a moment to be reaped by its parent.
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := ""
		pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range pids {
			b, _ := os.ReadFile(p)
			if string(b) == want {
				stat, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
				if !strings.Contains(string(stat), ") Z ") {
					found = p
				}
			}
		}
		if found == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %q still runs on the host: %s", strings.Join(args, " "), found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBinaryAndUnterminatedOutput(t *testing.T) {
	requireRoot(t)
	j, st := runShell(t, `printf 'a\000b\377\n\nlast'`)
	if st.Exit != 0 {
		t.Fatalf("status = %+v", st)
	}
	want := "a\x00b\xff\n\nlast"
	if got := string(readAll(t, j, false)); got != want {
		t.Fatalf("output = %q, want %q", got, want)
	}
	lines := j.Status().Lines
	if len(lines) != 3 || lines[0] != "a\x00b\xff" || lines[1] != "" || lines[2] != "last" {
		t.Fatalf("Lines = %q", lines)
	}
}

// randomFile writes n random bytes to a file and returns its path and content.
func randomFile(t testing.TB, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// A hundred readers, following from before the job starts writing to after
// it ends, each get every byte in order.
func TestConcurrentReaders(t *testing.T) {
	requireRoot(t)
	path, data := randomFile(t, 2<<20)
	// The job waits for a signal file so that every reader starts before
	// the first byte, and reads while the output grows.
	gate := filepath.Join(t.TempDir(), "gate")
	j := newTestJob(t, "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.01; done; cat "$2"`, "sh", gate, path)
	ch := j.Run()

	const readers = 100
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		r, err := j.Output(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer r.Close()
			// Odd readers read in small pieces, to interleave with the
			// writer differently.
			var got []byte
			var err error
			if i%2 == 1 {
				got, err = io.ReadAll(io.LimitReader(struct{ io.Reader }{r}, int64(len(data)+1)))
			} else {
				var buf bytes.Buffer
				_, err = io.CopyBuffer(&buf, struct{ io.Reader }{r}, make([]byte, 4096+97*i))
				got = buf.Bytes()
			}
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				errs <- errors.New("reader got different bytes")
			}
		}(i)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := final(t, ch); st.Exit != 0 {
		t.Fatalf("status = %+v", st)
	}
	// A reader that comes after the end gets it all too.
	if !bytes.Equal(readAll(t, j, true), data) {
		t.Fatal("late reader got different bytes")
	}
}

// A reader that never reads does not hold the job back, and still gets
// every byte when it finally reads.
func TestStalledReader(t *testing.T) {
	requireRoot(t)
	path, data := randomFile(t, 32<<20)
	j := newTestJob(t, "cat", path)
	ch := j.Run()
	stalled, err := j.Output(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	// The job ends while its reader has read nothing.
	if st := final(t, ch); st.Exit != 0 {
		t.Fatalf("status = %+v", st)
	}
	got, err := io.ReadAll(stalled)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stalled reader: %d bytes, err %v; want %d bytes", len(got), err, len(data))
	}
}

func TestReaderCancel(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sh", "-c", "echo one; sleep 1000")
	j.GracePeriod = time.Second
	j.Run()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := j.Output(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitOutput(t, j, "one\n")
	buf := make([]byte, 100)
	if n, err := r.Read(buf); n != 4 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	if _, err := r.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %v, want context.Canceled", err)
	}
}

// Status and Summary, hammered from many goroutines while the job writes
// and ends: no race, and every snapshot is coherent.
func TestStatusConcurrent(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sh", "-c", "for i in $(seq 1 200); do echo line $i; done")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var st Status
				if i%4 == 0 {
					st = j.Status()
				} else {
					st = j.Summary()
				}
				if st.State == StateExited && (st.Stopped == 0 || st.Exit != 0) {
					t.Errorf("incoherent status: %+v", st)
					return
				}
			}
		}(i)
	}
	st := final(t, j.Run())
	close(stop)
	wg.Wait()
	if st.Exit != 0 || len(j.Status().Lines) != 200 {
		t.Fatalf("status = %+v, %d lines", st, len(j.Status().Lines))
	}
}

func TestCloseRemovesOutput(t *testing.T) {
	requireRoot(t)
	j, _ := runShell(t, "echo hi")
	spool := filepath.Join(j.SpoolDir, j.ID+".out")
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("spool missing before Close: %v", err)
	}
	r, err := j.Output(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(spool); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spool still there after Close: %v", err)
	}
	if _, err := j.Output(context.Background(), false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Output after Close = %v, want ErrClosed", err)
	}
	// A reader opened before Close still reads.
	if b, _ := io.ReadAll(r); string(b) != "hi\n" {
		t.Fatalf("early reader got %q", b)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestCloseStopsRunningJob(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sleep", "1000")
	ch := j.Run()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if st := final(t, ch); !st.StopRequested {
		t.Fatalf("status = %+v, want stopped", st)
	}
}

func TestOutputBeforeRun(t *testing.T) {
	j := NewJob("true")
	if _, err := j.Output(context.Background(), false); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Output before Run = %v, want ErrNotStarted", err)
	}
	if j.Done() != nil {
		t.Fatal("Done before Run is not nil")
	}
	if st := j.Status(); st.State != StateNotStarted || st.String() != "Created" {
		t.Fatalf("Status before Run = %+v", st)
	}
}

func TestInvalidLimits(t *testing.T) {
	j := NewJob("true")
	j.SpoolDir = t.TempDir()
	j.MemoryMB = -1
	st := final(t, j.Run())
	if !errors.Is(st.Error, ErrInvalid) || !strings.Contains(st.Error.Error(), "MemoryMB") {
		t.Fatalf("error = %v, want ErrInvalid naming MemoryMB", st.Error)
	}
}

func TestLineBuffer(t *testing.T) {
	lb := NewLineBuffer()
	for _, s := range []string{"a", "b\nc", "\n", "\nd"} {
		lb.Write([]byte(s))
	}
	got := lb.Lines()
	want := []string{"ab", "c", "", "d"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Lines = %q, want %q", got, want)
	}
}

// StopWithin overrides the grace period for one stop.
func TestStopWithin(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	j.GracePeriod = time.Hour
	ch := j.Run()
	waitOutput(t, j, "ready\n")
	if err := j.StopWithin(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st := final(t, ch); st.Signal != syscall.SIGKILL {
		t.Fatalf("status %v, want killed after the short grace", st)
	}
}

// Kill sends no SIGTERM: a job that would report one never does.
func TestKill(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sh", "-c", `trap "echo TERM" TERM; echo ready; while :; do sleep 0.05; done`)
	j.GracePeriod = time.Hour
	ch := j.Run()
	waitOutput(t, j, "ready\n")
	if err := j.Kill(); err != nil {
		t.Fatal(err)
	}
	st := final(t, ch)
	if st.Signal != syscall.SIGKILL || !st.StopRequested {
		t.Fatalf("status %v (stop requested %v), want killed", st, st.StopRequested)
	}
	if out := strings.Join(j.Status().Lines, "\n"); out != "ready" {
		t.Errorf("output %q: the job had a SIGTERM", out)
	}
	if err := j.Kill(); err != nil {
		t.Errorf("Kill of an ended job: %v", err)
	}
	if err := NewJob("true").Kill(); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Kill before Run: %v, want ErrNotStarted", err)
	}
}
