// Package e2e tests the tjob CLI end to end: the real tjob and tjobs
// binaries, a real server on a loopback port, certificates from
// `tjobs certs`, and real jobs.
//
// The binaries are built from the source tree, or taken from the directory
// in TJOB_BIN_DIR when it is set (where there is no Go toolchain).
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/neildo/tjob"
	"github.com/neildo/tjob/internal/testkit"
)

var (
	binDir   string // holds tjob and tjobs
	setupErr error  // why the binaries are not there
)

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips
		}
		if dir := os.Getenv("TJOB_BIN_DIR"); dir != "" {
			binDir = dir
			return m.Run()
		}
		tmp, err := os.MkdirTemp("", "tjob-e2e-bin")
		if err != nil {
			setupErr = err
			return m.Run()
		}
		defer os.RemoveAll(tmp)
		binDir = tmp
		setupErr = build(tmp)
		return m.Run()
	}()
	os.Exit(code)
}

// build builds tjob, tjobs and tjob-init (which tjobs finds beside it)
// from this tree into dir, static as the Makefile builds them.
func build(dir string) error {
	for _, b := range []struct{ name, moduleDir string }{
		{"tjob", ".."},
		{"tjobs", "../../service"},
		{"tjob-init", "../../cmd"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), "./"+b.name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Dir = b.moduleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.name, err, out)
		}
	}
	return nil
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: tjobs runs jobs in namespaces and cgroups of their own")
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// env is a working directory with certificates in .tjob (for cli and bob)
// and a tjobs serving on a loopback port.
type env struct {
	dir  string
	addr string
	srv  *exec.Cmd
	log  *syncBuffer
	done chan struct{} // closed when tjobs has exited
	// failures are the env's own, which its end repeats; tests fail
	// through failf from many goroutines at once.
	failuresMu sync.Mutex
	failures   []string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newEnv is an env with tjobs's default limits, on a free loopback port.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t)
}

// testBlockDevice is the MAJOR:MINOR of the disk under $TJOB_TEST_BLOCKDIR,
// for machines whose / is not on a disk (the test VM), where the default
// read and write limits need to be told which disk they limit.
func testBlockDevice(t *testing.T) string {
	dir := os.Getenv("TJOB_TEST_BLOCKDIR")
	if dir == "" {
		return ""
	}
	return deviceOf(t, dir)
}

// deviceOf is the MAJOR:MINOR of the file system that holds dir.
func deviceOf(t *testing.T, dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatalf("device of %s: %v", dir, err)
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	return fmt.Sprintf("%d:%d", major, minor)
}

// stopStall is how long a stopping tjobs may go without any of its jobs
// ending before the tests call it stuck. There is no bound on the whole
// shutdown: ending thousands of jobs takes as long as the host's CPU
// needs (seconds here, minutes on a busy machine), and speed is the
// benchmarks' business.
const stopStall = 60 * time.Second

// stop sends tjobs SIGTERM, waits for it to exit for as long as its jobs
// keep ending (their inits are its children), and returns how long it
// took. A tjobs that stalls gets SIGQUIT, on which Go prints every
// goroutine's stack (the failure sums them up) and exits; it is killed if
// it does not. The jobs it leaves are killed and their cgroups removed
// here, so that the next test's server does not start by cleaning up after
// this one.
func (e *env) stop(t *testing.T) time.Duration {
	start := time.Now()
	pid := e.srv.Process.Pid
	e.srv.Process.Signal(syscall.SIGTERM)
	left, moved := -1, time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(moved) < stopStall {
		select {
		case <-e.done:
			return time.Since(start)
		case <-tick.C:
		}
		if n := len(testkit.Children(pid)); n != left {
			left, moved = n, time.Now()
		}
	}
	logged := len(e.log.String())
	e.srv.Process.Signal(syscall.SIGQUIT)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.srv.Process.Kill()
		<-e.done
	}
	e.failf(t, "tjobs did not exit: %d of its jobs were left %v after SIGTERM, none had ended in the last %v; its goroutines: %s",
		left, time.Since(start).Round(time.Second), stopStall, testkit.GoroutineSummary(e.log.String()[logged:], "neildo/tjob", 6))
	if removed, err := tjob.CleanupStale(); err != nil {
		e.failf(t, "cleaning up after the killed tjobs (%d cgroups removed): %v", len(removed), err)
	}
	return time.Since(start)
}

// failf fails t and keeps the message, which the end of the test repeats
// after tjobs's log: CI shows the end of a failed run's output.
func (e *env) failf(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	e.failuresMu.Lock()
	e.failures = append(e.failures, msg)
	e.failuresMu.Unlock()
	t.Error(msg)
}

type result struct {
	stdout []byte
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// tjob runs the CLI in the env's directory against its server.
func (e *env) tjob(t *testing.T, args ...string) result {
	t.Helper()
	return e.tjobAt(t, e.addr, args...)
}

// tjobAs runs the CLI as user (whose certificate is in .tjob).
func (e *env) tjobAs(t *testing.T, user string, args ...string) result {
	t.Helper()
	cmd, rest := args[0], args[1:]
	return e.tjob(t, append([]string{cmd, "-cert", ".tjob/" + user + ".crt", "-key", ".tjob/" + user + ".key"}, rest...)...)
}

func (e *env) tjobAt(t *testing.T, addr string, args ...string) result {
	t.Helper()
	// -addr goes after the command, as the RFD puts options.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") && args[0] != "help" {
		args = append([]string{args[0], "-addr", addr}, args[1:]...)
	}
	return e.tjobEnv(t, nil, args...)
}

// tjobEnv runs the CLI in the env's directory with more environment
// (KEY=value each) and the command line as given: no -addr of its own.
func (e *env) tjobEnv(t *testing.T, environ []string, args ...string) result {
	t.Helper()
	return e.runTjob(t, e.command(context.Background(), environ, args...))
}

// command is the CLI in the env's directory, with more environment; ctx
// kills it.
func (e *env) command(ctx context.Context, environ []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "tjob"), args...)
	cmd.Dir = e.dir
	cmd.Env = append(withoutTjobEnv(os.Environ()), environ...)
	return cmd
}

// runTjob runs the CLI and says how it went.
func (e *env) runTjob(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	args := cmd.Args[1:]
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.Bytes(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tjob %q: %v", args, err)
	}
	return r
}

// withoutTjobEnv is environ without the variables tjob reads, so that
// only a test sets them.
func withoutTjobEnv(environ []string) []string {
	var kept []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "TJOB_ADDR=") && !strings.HasPrefix(kv, "TJOB_CERT_PATH=") && !strings.HasPrefix(kv, "TJOB_USER=") {
			kept = append(kept, kv)
		}
	}
	return kept
}

// ok runs tjob and fails the test unless it succeeded quietly.
func (e *env) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := e.tjob(t, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("tjob %q: %v", args, r)
	}
	return string(r.stdout)
}

// fails runs tjob and checks it failed with code and one line on stderr
// that has every one of want in it.
func fails(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d: %v", code, r)
	}
	if code == 1 && (strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "tjob: ")) {
		t.Fatalf("want one line on stderr: %q", r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("stderr %q lacks %q", r.stderr, w)
		}
	}
	for _, jargon := range []string{"rpc error", "code =", "desc =", "goroutine", "panic"} {
		if strings.Contains(r.stderr, jargon) {
			t.Fatalf("stderr has %q: %q", jargon, r.stderr)
		}
	}
}

// runJob runs a job and returns its ID.
func (e *env) runJob(t *testing.T, args ...string) string {
	t.Helper()
	id := strings.TrimSpace(e.ok(t, append([]string{"run"}, args...)...))
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("run printed %q, not a job ID", id)
	}
	return id
}

// waitJob follows a job to its end.
func (e *env) waitJob(t *testing.T, id string) []byte {
	t.Helper()
	return []byte(e.ok(t, "logs", "-f", id))
}

func TestRunAndLogsByteExact(t *testing.T) {
	e := newEnv(t)
	data := make([]byte, 200<<10+3)
	rand.Read(data)
	data = append(data, "\x00\xff\xfe\r\n"...)
	file := filepath.Join(jobVisibleDir(t), "data")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	id := e.runJob(t, "cat", file)
	if got := e.waitJob(t, id); !bytes.Equal(got, data) {
		t.Fatalf("logs -f: %d bytes, want %d", len(got), len(data))
	}
	if got := e.ok(t, "logs", id); got != string(data) {
		t.Fatalf("logs: %d bytes, want %d", len(got), len(data))
	}
}

// TestRunFlags: flags after the command are the command's.
func TestRunFlags(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "echo", "-n", "no newline")
	if got := string(e.waitJob(t, id)); got != "no newline" {
		t.Fatalf("echo -n: %q", got)
	}
	id = e.runJob(t, "sh", "-c", `echo "$0 $1"`, "-addr", "x")
	if got := string(e.waitJob(t, id)); got != "-addr x\n" {
		t.Fatalf("sh -c: %q", got)
	}
	// Options may also come before the command's name, and after JOB.
	r := e.tjobAt(t, e.addr, "-addr", e.addr, "logs", id[:8], "-f")
	if r.code != 0 || string(r.stdout) != "-addr x\n" {
		t.Fatalf("tjob -addr ... logs ID -f: %v", r)
	}
}

var psHeader = regexp.MustCompile(`^JOB ID +COMMAND +CREATED +STATUS$`)

// psRows parses `tjob ps` into rows keyed by short ID, checking the header
// and that columns line up.
func psRows(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !psHeader.MatchString(lines[0]) {
		t.Fatalf("ps header: %q", lines[0])
	}
	col := strings.Index(lines[0], "COMMAND")
	rows := map[string]string{}
	for _, l := range lines[1:] {
		if len(l) < col || l[col] != '"' {
			t.Fatalf("ps row out of line with its header:\n%s", out)
		}
		rows[l[:8]] = l
	}
	return rows
}

func TestPS(t *testing.T) {
	e := newEnv(t)
	if got := e.ok(t, "ps", "-a"); !psHeader.MatchString(strings.TrimSpace(got)) {
		t.Fatalf("empty ps -a: %q", got)
	}
	echo := e.runJob(t, "echo", "hello")
	e.waitJob(t, echo)
	sleeper := e.runJob(t, "sleep", "1000")
	long := e.runJob(t, "sh", "-c", "sleep 999 # a long command line")
	stopped := e.runJob(t, "sleep", "998")
	e.ok(t, "stop", stopped)

	rows := psRows(t, e.ok(t, "ps"))
	if len(rows) != 2 || rows[sleeper[:8]] == "" || rows[long[:8]] == "" {
		t.Fatalf("ps shows running jobs only:\n%v", rows)
	}
	running := regexp.MustCompile(`^[0-9a-f]{8}   "sleep 1000" +(Less than a second|\d+ seconds?) ago +Up (Less than a second|\d+ seconds?)$`)
	if !running.MatchString(rows[sleeper[:8]]) {
		t.Errorf("running job: %q", rows[sleeper[:8]])
	}
	if !strings.Contains(rows[long[:8]], `"sh -c 'sleep 999 # …"`) {
		t.Errorf("long command not quoted as a shell needs it, and cut to 20 characters: %q", rows[long[:8]])
	}

	out := e.ok(t, "ps", "-a")
	rows = psRows(t, out)
	if len(rows) != 4 {
		t.Fatalf("ps -a:\n%s", out)
	}
	exited := regexp.MustCompile(`^[0-9a-f]{8}   "echo hello" +(Less than a second|\d+ seconds?) ago +Exited \(0\) (Less than a second|\d+ seconds?) ago$`)
	if !exited.MatchString(rows[echo[:8]]) {
		t.Errorf("exited job: %q", rows[echo[:8]])
	}
	if !strings.Contains(rows[stopped[:8]], "Exited (143) ") || !strings.HasSuffix(rows[stopped[:8]], " ago (stopped)") {
		t.Errorf("stopped job: %q", rows[stopped[:8]])
	}
	// Newest first.
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[1], stopped[:8]) || !strings.HasPrefix(lines[4], echo[:8]) {
		t.Errorf("not newest first:\n%s", out)
	}
}

func TestStop(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "sh", "-c", "echo started; sleep 1000")
	if got := e.ok(t, "stop", id[:6]); got != id+"\n" {
		t.Fatalf("stop printed %q", got)
	}
	// The job has ended when stop returns, by the SIGTERM (143), not by
	// the SIGKILL after the grace period.
	row := psRows(t, e.ok(t, "ps", "-a"))[id[:8]]
	if !strings.Contains(row, "Exited (143)") {
		t.Fatalf("after stop: %q", row)
	}
	e.ok(t, "stop", id) // stopping an ended job is fine
}

func TestPrefixes(t *testing.T) {
	e := newEnv(t)
	byFirst := map[byte][]string{}
	var shared []string
	for len(shared) == 0 {
		id := e.runJob(t, "echo", "x")
		byFirst[id[0]] = append(byFirst[id[0]], id)
		if len(byFirst[id[0]]) == 2 {
			shared = byFirst[id[0]]
		}
	}
	r := e.tjob(t, "logs", shared[0][:1])
	fails(t, r, 1, "ambiguous", shared[0], shared[1])

	for _, id := range shared {
		n := 1
		for strings.HasPrefix(shared[0], id[:n]) && strings.HasPrefix(shared[1], id[:n]) {
			n++
		}
		if got := e.ok(t, "logs", "-f", id[:n]); got != "x\n" {
			t.Errorf("logs %s: %q", id[:n], got)
		}
	}
	fails(t, e.tjob(t, "logs", "ffff0000"), 1, "no such job", "ffff0000")
	fails(t, e.tjob(t, "stop", "ffff0000"), 1, "no such job", "ffff0000")
}

func TestOtherUser(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "sleep", "1000")
	r := e.tjobAs(t, "bob", "ps", "-a")
	if r.code != 0 || len(psRows(t, string(r.stdout))) != 0 {
		t.Fatalf("bob's ps -a: %v", r)
	}
	fails(t, e.tjobAs(t, "bob", "logs", id), 1, "no such job")
	fails(t, e.tjobAs(t, "bob", "stop", id[:8]), 1, "no such job")
	if row := psRows(t, e.ok(t, "ps"))[id[:8]]; !strings.Contains(row, "Up ") {
		t.Fatalf("cli's job after bob's stop: %q", row)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)

	fails(t, e.tjob(t, "run", "no-such-command", "arg"), 1, "job failed to start", "no-such-command")
	fails(t, e.tjob(t, "ps", "-cert", "nope.crt"), 1, "nope.crt")
	fails(t, e.tjob(t, "ps", "-key", "missing/cli.key"), 1, "missing/cli.key")
	fails(t, e.tjob(t, "ps", "-ca", "ca-missing.crt"), 1, "ca-missing.crt")

	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	fails(t, e.tjobAt(t, closed, "ps"), 1, "server not reachable at "+closed)

	// A certificate from another CA.
	certs := exec.Command(filepath.Join(binDir, "tjobs"), "certs", "-dir", "other")
	certs.Dir = e.dir
	if out, err := certs.CombinedOutput(); err != nil {
		t.Fatalf("tjobs certs: %v\n%s", err, out)
	}
	fails(t, e.tjob(t, "ps", "-cert", "other/cli.crt", "-key", "other/cli.key"), 1, "other/cli.crt", "rejected")
	// A server the CA does not vouch for.
	fails(t, e.tjob(t, "ps", "-ca", "other/ca.crt"), 1, "is signed by", "not by the CA in other/ca.crt")
}

func TestUsage(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{},
		{"frob"},
		{"run"},
		{"stop"},
		{"logs"},
		{"logs", "a", "b"},
		{"ps", "extra"},
		{"ps", "-x"},
		{"ps", "--format", "yaml"},
		{"wait"},
		{"rm"},
		{"inspect"},
		{"version", "x"},
		{"stop", "-t", "soon", "x"},
		{"run", "--memory", "lots", "true"},
		{"run", "--cpus", "-1", "true"},
		{"run", "-e", "=x", "true"},
	} {
		r := e.tjob(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "Usage: tjob") || len(r.stdout) != 0 {
			t.Errorf("tjob %q: %v", args, r)
		}
	}
	for _, args := range [][]string{{"help"}, {"help", "logs"}, {"logs", "-h"}, {"run", "-h"}, {"ps", "-h"}, {"stop", "-h"},
		{"wait", "-h"}, {"rm", "-h"}, {"inspect", "--help"}, {"version", "-h"}} {
		r := e.tjob(t, args...)
		if r.code != 0 || !strings.Contains(string(r.stdout), "Usage: tjob") || r.stderr != "" {
			t.Errorf("tjob %q: %v", args, r)
		}
		if len(args) == 2 && !strings.Contains(string(r.stdout), "Examples:") {
			t.Errorf("tjob %q has no examples: %s", args, r.stdout)
		}
	}
}

// TestLogsInterrupt: Ctrl-C ends `logs -f` quietly with 130, after the
// output so far.
func TestLogsInterrupt(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "sh", "-c", "echo first; sleep 1000")
	e.interruptAfterFirst(t, "logs", "-addr", e.addr, "-f", id)
	// The job goes on.
	if row := psRows(t, e.ok(t, "ps"))[id[:8]]; !strings.Contains(row, "Up ") {
		t.Fatalf("job after the follower left: %q", row)
	}
}

// interruptAfterFirst runs tjob with args, reads the job's first line of
// output, "first", as it comes, then sends tjob SIGINT (Ctrl-C), and checks
// that it ends quietly with 130.
func (e *env) interruptAfterFirst(t *testing.T, args ...string) {
	t.Helper()
	cmd := e.command(context.Background(), nil, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len("first\n"))
	if _, err := io.ReadFull(stdout, first); err != nil || string(first) != "first\n" {
		t.Fatalf("first output: %q, %v", first, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(stdout)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("after SIGINT: %v", err)
	}
	if stderr.Len() != 0 || len(rest) != 0 {
		t.Fatalf("after SIGINT: stdout %q, stderr %q", rest, stderr.String())
	}
}

// TestServerShutdown: SIGTERM stops tjobs' jobs and ends followers with a
// line that says so.
func TestServerShutdown(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "sh", "-c", "echo up; sleep 1000")
	cmd := exec.Command(filepath.Join(binDir, "tjob"), "logs", "-addr", e.addr, "-f", id)
	cmd.Dir = e.dir
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for stdout.String() != "up\n" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	e.stop(t)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "shutting down") {
		t.Fatalf("follower at shutdown: %v, stderr %q", err, stderr.String())
	}
	if code := e.srv.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("tjobs exited %d", code)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, ".tjob", "spool")); len(ents) != 0 {
		t.Fatalf("spool left: %v", ents)
	}
}
