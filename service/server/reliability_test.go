package server

// The reliability suite at the RPC level: bad input, faults a job
// causes, and clients that misbehave, against a real server on loopback with
// real TLS and real jobs. Every case logs one line,
//
//	RELIABILITY: <case>: <result with figures>
//
// which hack/reliability-doc.sh collects into docs/RELIABILITY.md.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// jobSet is what Status(all) says of a user's jobs: ID and state.
func jobSet(t testing.TB, c tjobv1.JobClient) []string {
	t.Helper()
	resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil {
		t.Fatalf("Status(all): %v", err)
	}
	var set []string
	for _, j := range resp.GetJobs() {
		set = append(set, j.GetJobId()+" "+j.GetState().String())
	}
	slices.Sort(set)
	return set
}

func dirEntries(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestReliabilityBadInput: every request the server cannot turn into a job,
// or that names no job of the caller's, gets a clear error with the right
// code and changes nothing: no job appears or changes state, no output file
// appears. A command that cannot start is a failed job (the API's contract),
// with its reason, and nothing runs.
func TestReliabilityBadInput(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	conn, _ := ts.dial(t, ts.clientTLS(ptr(ts.user(t, "alice"))))

	// Two jobs whose IDs share a first character, for an ambiguous prefix,
	// and one that runs.
	byFirst := map[byte][]string{}
	var shared []string
	for len(shared) == 0 {
		id := run(t, c, "true")
		wait(t, c, id) // so that its state does not change under the test
		byFirst[id[0]] = append(byFirst[id[0]], id)
		if len(byFirst[id[0]]) == 2 {
			shared = byFirst[id[0]]
		}
	}
	running := run(t, c, "sleep", "1000")
	failed, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "/no/such/command"})
	if err != nil {
		t.Fatal(err)
	}
	failedID := failed.GetJobId()

	statusOf := func(id string) error {
		_, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
		return err
	}
	stopOf := func(id string) error {
		_, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: id})
		return err
	}
	logsOf := func(follow bool) func(string) error {
		return func(id string) error {
			_, err := logs(ctxT(t), c, id, follow)
			return err
		}
	}
	runOf := func(path string, args ...string) func() error {
		return func() error {
			_, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: path, Args: args})
			return err
		}
	}
	// 1 MiB of arguments: 8192 of 128 bytes (each within the kernel's
	// limit for one string), and one of 1 MiB.
	many := make([]string, 8192)
	for i := range many {
		many[i] = strings.Repeat("a", 127)
	}
	huge := strings.Repeat("b", 1<<20)
	longID := strings.Repeat("f", 1<<20)

	type badCase struct {
		name string
		call func() error
		code codes.Code
		want string // in the message
	}
	var cases []badCase
	add := func(name string, code codes.Code, want string, call func() error) {
		cases = append(cases, badCase{name, call, code, want})
	}
	add("Run: empty command", codes.InvalidArgument, "no command", runOf(""))
	add("Run: NUL byte in the command", codes.InvalidArgument, "NUL", runOf("ec\x00ho", "x"))
	add("Run: NUL byte in an argument", codes.InvalidArgument, "NUL", runOf("echo", "a", "b\x00c"))
	add("Run: 1 MiB of arguments (8192 x 128 B)", codes.InvalidArgument, "too long", runOf("echo", many...))
	add("Run: one argument of 1 MiB", codes.InvalidArgument, "too long", runOf("echo", huge))
	add("Run: memory below the library's floor", codes.InvalidArgument, "limits.memory_mb 4 is below the minimum", func() error {
		_, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "true", Limits: &tjobv1.Limits{MemoryMb: 4}})
		return err
	})
	for _, rpc := range []struct {
		name string
		call func(string) error
	}{
		{"Status", statusOf}, {"Stop", stopOf}, {"Logs", logsOf(false)}, {"Logs -f", logsOf(true)},
	} {
		add(rpc.name+": empty job ID", codes.InvalidArgument, "no job ID", func() error { return rpc.call("") })
		add(rpc.name+": unknown job ID", codes.NotFound, "no such job", func() error { return rpc.call("0badf00d-0000-4000-8000-000000000000") })
		add(rpc.name+": ambiguous job ID", codes.InvalidArgument, "ambiguous", func() error { return rpc.call(shared[0][:1]) })
	}
	for _, id := range []string{"../../../etc/passwd", "*", "%s%n", "job\nid\x00\x1b[2J", "\u00e9t\u00e9"} {
		add(fmt.Sprintf("Stop: malformed job ID %q", id), codes.NotFound, "no such job", func() error { return stopOf(id) })
	}
	add("Status: job ID of 1 MiB", codes.NotFound, "no such job", func() error { return statusOf(longID) })
	add("Logs: job ID of 1 MiB", codes.NotFound, "no such job", func() error { return logsOf(true)(longID) })
	// A client that does not use the generated code can send a job ID
	// that is not UTF-8: LogsResponse has a bytes field where StopRequest
	// has its job_id.
	add("Stop: job ID that is not UTF-8", codes.Internal, "UTF-8", func() error {
		return conn.Invoke(ctxT(t), "/tjob.v1.Job/Stop", &tjobv1.LogsResponse{Data: []byte{0xff, 0xfe, 'a'}}, &tjobv1.StopResponse{})
	})
	add("Logs of a job that failed to start", codes.FailedPrecondition, "failed to start", func() error { return logsOf(false)(failedID) })
	add("Logs -f of a job that failed to start", codes.FailedPrecondition, "failed to start", func() error { return logsOf(true)(failedID) })

	before, spool := jobSet(t, c), dirEntries(ts.spool)
	for _, tc := range cases {
		err := tc.call()
		st := status.Convert(err)
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: got %v %q, want %v with %q", tc.name, st.Code(), clip(st.Message(), 200), tc.code, tc.want)
			continue
		}
		// A person can read the error: one short line.
		if len(st.Message()) > 1024 || strings.ContainsAny(st.Message(), "\n\x00\x1b") {
			t.Errorf("%s: message of %d bytes: %q", tc.name, len(st.Message()), clip(st.Message(), 200))
			continue
		}
		report(t, "bad input: "+tc.name, "%v %q", st.Code(), st.Message())
	}
	if after := jobSet(t, c); !slices.Equal(before, after) {
		t.Errorf("bad requests changed the jobs:\nbefore %q\nafter  %q", before, after)
	}
	if after := dirEntries(ts.spool); !slices.Equal(spool, after) {
		t.Errorf("bad requests changed the spool:\nbefore %q\nafter  %q", spool, after)
	}
	if st := jobStatus(t, c, running); st.GetState() != tjobv1.State_STATE_RUNNING {
		t.Errorf("the running job: %v", st.GetState())
	}
	// One log line per call, however long the ID it named.
	for _, line := range strings.Split(ts.log.String(), "\n") {
		if len(line) > 4096 {
			t.Errorf("a log line of %d bytes: %q...", len(line), line[:200])
		}
	}

	// Commands that cannot start: a failed job each, with the reason, and
	// nothing left running.
	for _, tc := range []struct {
		name string
		path string
		args []string
		want string
	}{
		{"relative path that does not exist", "./no-such-dir/cmd", nil, "no such file or directory"},
		{"name not in PATH", "no-such-command-tjob", nil, "executable file not found"},
		{"directory as the command", "/etc", nil, "permission denied"},
		{"file that is not executable", "/etc/passwd", nil, "permission denied"},
	} {
		resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: tc.path, Args: tc.args})
		if err != nil {
			t.Errorf("Run %s: %v", tc.name, err)
			continue
		}
		st := resp.GetStatus()
		if st.GetState() != tjobv1.State_STATE_FAILED || st.GetExit() != -1 || !strings.Contains(st.GetError(), tc.want) || !strings.Contains(st.GetError(), strings.TrimPrefix(tc.path, "./")) {
			t.Errorf("Run %s: %v", tc.name, st)
			continue
		}
		report(t, "bad input: Run: "+tc.name, "job %s FAILED, exit -1, error %q", shortID(resp.GetJobId()), st.GetError())
	}
}

func ptr[T any](v T) *T { return &v }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// TestReliabilityLongCommandLine: a command line at the limit runs, and the
// Status of many such jobs stays small enough for any client.
func TestReliabilityLongCommandLine(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	// Just under the limit: the path and 1000 arguments, each counted with
	// its NUL.
	args := []string{"-c", `echo $#`, "sh"}
	n := len("sh") + 1 + len("-c") + 1 + len(`echo $#`) + 1 + len("sh") + 1
	arg := strings.Repeat("é", 60) // 120 bytes, 2 per rune
	for n+len(arg)+1 <= maxCmdBytes {
		args = append(args, arg)
		n += len(arg) + 1
	}
	id := run(t, c, "sh", args...)
	wait(t, c, id)
	out, err := logs(ctxT(t), c, id, false)
	if err != nil || string(out) != strconv.Itoa(len(args)-3)+"\n" {
		t.Fatalf("output %q, %v; want %d arguments", out, err, len(args)-3)
	}
	resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	cmd := resp.GetJobs()[0].GetCmd()
	if len(cmd) > maxStatusCmd || !utf8.ValidString(cmd) || !strings.HasPrefix(cmd, "sh -c echo $# sh é") || !strings.HasSuffix(cmd, "…") {
		t.Fatalf("Status cmd: %d bytes: %q...", len(cmd), clip(cmd, 80))
	}
	report(t, "bad input: Run: command line at the limit", "%d arguments, %d bytes: runs (the job counts %s); its Status is %d bytes, cmd cut to %d bytes",
		len(args), n, strings.TrimSpace(string(out)), proto.Size(resp), len(cmd))
}

// TestReliabilityOversizedMessage: a request larger than the server takes
// is refused before it reaches a handler, and the server goes on.
func TestReliabilityOversizedMessage(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	big := strings.Repeat("x", 5<<20)
	_, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "echo", Args: []string{big}})
	wantCode(t, "Run of 5 MiB", err, codes.ResourceExhausted)
	msg := status.Convert(err).Message()
	_, err = c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &big})
	wantCode(t, "Status of a 5 MiB ID", err, codes.ResourceExhausted)
	if got := jobSet(t, c); len(got) != 0 {
		t.Fatalf("jobs after oversized requests: %q", got)
	}
	id := run(t, c, "echo", "still serving")
	wait(t, c, id)
	out, err := logs(ctxT(t), c, id, false)
	if err != nil || string(out) != "still serving\n" {
		t.Fatalf("after oversized requests: %q, %v", out, err)
	}
	report(t, "bad input: oversized gRPC message (5 MiB Run, 5 MiB Status)", "ResourceExhausted %q; no job made; the same connection then runs a job", msg)
}

// TestReliabilityBadLimits: a server configured with negative or absurd
// limits refuses to start, naming the limit, rather than failing every Run.
func TestReliabilityBadLimits(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"negative memory", func(c *Config) { c.MemoryMB = -1 }, "MemoryMB"},
		{"negative CPU", func(c *Config) { c.CPUPercent = -20 }, "CPUPercent"},
		{"absurd CPU (a million percent)", func(c *Config) { c.CPUPercent = 1_000_000 }, "CPUPercent"},
		{"memory below the floor (1 MiB)", func(c *Config) { c.MemoryMB = 1 }, "MemoryMB"},
		{"negative read rate", func(c *Config) { c.ReadBPS = -1 }, "ReadBPS"},
		{"absurd pids (a billion)", func(c *Config) { c.PidsMax = 1_000_000_000 }, "PidsMax"},
		{"negative grace", func(c *Config) { c.GracePeriod = -time.Second }, "GracePeriod"},
	} {
		cfg := testConfig()
		cfg.StateDir = filepath.Join(t.TempDir(), "state")
		cfg.Log = io.Discard
		tc.set(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want an error naming %s", tc.name, err, tc.want)
			continue
		}
		if ents := dirEntries(cfg.StateDir); len(ents) != 0 {
			t.Errorf("%s: state directory left with %q", tc.name, ents)
		}
		report(t, "bad input: server limits: "+tc.name, "the server does not start: %q", err)
	}
}

// TestReliabilityFaults: what a job can do to itself, seen through the API:
// the service keeps working, and the Status says what happened.
func TestReliabilityFaults(t *testing.T) {
	cfg := testConfig()
	cfg.MemoryMB = 64
	cfg.PidsMax = 64
	cfg.GracePeriod = 500 * time.Millisecond
	ts := startServer(t, cfg)
	c := ts.client(t, "alice")

	t.Run("out of memory", func(t *testing.T) {
		id := run(t, c, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
		st := wait(t, c, id)
		if !st.GetOomKilled() || st.GetExit() != 137 || st.GetSignal() != int32(syscall.SIGKILL) {
			t.Fatalf("status: %v", st)
		}
		report(t, "fault: job exceeds its memory (dd bs=200M, limit 64 MiB)", "exit %d, signal %d, oom_killed %v, peak %.1f MiB",
			st.GetExit(), st.GetSignal(), st.GetOomKilled(), float64(st.GetUsage().GetMemoryPeakBytes())/(1<<20))
	})

	t.Run("ignores SIGTERM", func(t *testing.T) {
		id := run(t, c, "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done")
		waitLogs(t, c, id, "ready\n")
		resp, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		st := resp.GetStatus()
		if st.GetState() != tjobv1.State_STATE_EXITED || st.GetSignal() != int32(syscall.SIGKILL) || !st.GetStopRequested() {
			t.Fatalf("status: %v", st)
		}
		report(t, "fault: job ignores SIGTERM", "Stop returns with the job ended: exit %d, signal %d (KILL after the %v grace)", st.GetExit(), st.GetSignal(), cfg.GracePeriod)
	})

	t.Run("leaves daemons", func(t *testing.T) {
		// The markers are made when the job runs, so that only the daemons
		// have them in their command lines. (busybox has no nohup.)
		const exits, stopped = "31401.5", "31402.5"
		// The first job waits until the test has seen its daemons, then
		// exits by itself; the second is stopped.
		gate := filepath.Join(jobVisibleDir(t), "gate")
		id := run(t, c, "sh", "-c", `m=31401; setsid sh -c "sleep $m.5" & sh -c "trap '' HUP; sleep $m.5 &" & while [ ! -e `+gate+` ]; do sleep 0.05; done`)
		id2 := run(t, c, "sh", "-c", "m=31402; setsid sleep $m.5 & sleep 1000")
		for m, want := range map[string]int{exits: 2, stopped: 1} {
			if !eventually(20*time.Second, func() bool { return len(processesMentioning(m)) >= want }) {
				t.Fatalf("the daemons (sleep %s) are not where the test looks: %q", m, processesMentioning(m))
			}
		}
		n := len(processesMentioning(exits)) + len(processesMentioning(stopped))
		os.WriteFile(gate, nil, 0o644)
		st := wait(t, c, id)
		c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: id2})
		for _, m := range []string{exits, stopped} {
			if !eventually(10*time.Second, func() bool { return len(processesMentioning(m)) == 0 }) {
				t.Fatalf("daemons left: %q", processesMentioning(m))
			}
		}
		report(t, "fault: job leaves daemons (setsid; double fork ignoring SIGHUP)", "%d daemons seen running; none left once the job exited (exit %d) or was stopped", n, st.GetExit())
	})

	t.Run("fork bomb", func(t *testing.T) {
		bob := ts.client(t, "bob")
		id := run(t, c, "sh", "-c", "b() { b | b & }; b; exec sleep 1000")
		// While the bomb runs, the host and another user still run jobs.
		var peak int
		var pidsDir string
		for range 20 {
			for _, d := range cgroupsNamed([]string{id}) {
				if _, err := os.Stat(filepath.Join(d, "pids.current")); err == nil {
					pidsDir = d
				}
			}
			if pidsDir != "" {
				b, _ := os.ReadFile(filepath.Join(pidsDir, "pids.current"))
				n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				peak = max(peak, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if pidsDir == "" {
			t.Fatal("no pids cgroup for the job")
		}
		if peak > cfg.PidsMax {
			t.Fatalf("pids.current %d above the limit %d", peak, cfg.PidsMax)
		}
		other := run(t, bob, "echo", "bob runs")
		if out, err := logs(ctxT(t), bob, other, true); err != nil || string(out) != "bob runs\n" {
			t.Fatalf("another user during the bomb: %q, %v", out, err)
		}
		events, _ := os.ReadFile(filepath.Join(pidsDir, "pids.events"))
		if _, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: id}); err != nil {
			t.Fatal(err)
		}
		if cgs := cgroupsNamed([]string{id}); len(cgs) != 0 {
			t.Fatalf("cgroups left: %v", cgs)
		}
		report(t, "fault: fork bomb", "contained by pids.max %d: peak %d processes, pids.events %q; another user's job ran meanwhile; Stop ended it and left no cgroup",
			cfg.PidsMax, peak, strings.TrimSpace(string(events)))
	})

	t.Run("100 MiB without a newline", func(t *testing.T) {
		size := 100 << 20
		if scaledDown() && !soak() {
			size = 16 << 20
		}
		id := run(t, c, "sh", "-c", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x", size))
		stream, err := c.Logs(ctxT(t), &tjobv1.LogsRequest{JobId: id, Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		n, msgs := 0, 0
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(bytes.Trim(msg.GetData(), "x")) != 0 {
				t.Fatalf("a byte other than x at %d", n)
			}
			n += len(msg.GetData())
			msgs++
		}
		st := jobStatus(t, c, id)
		if n != size || st.GetExit() != 0 || st.Error != nil {
			t.Fatalf("followed %d bytes of %d; status %v", n, size, st)
		}
		report(t, "fault: job writes 100 MiB without a newline", "a follower got all %d MiB (all x) in %d messages; exit 0", size>>20, msgs)
	})

	t.Run("closes stdout and keeps running", func(t *testing.T) {
		id := run(t, c, "sh", "-c", "echo bye; exec >&- 2>&-; sleep 0.5; exit 4")
		out, err := logs(ctxT(t), c, id, true)
		st := jobStatus(t, c, id)
		if err != nil || string(out) != "bye\n" || st.GetState() != tjobv1.State_STATE_EXITED || st.GetExit() != 4 {
			t.Fatalf("output %q (%v), status %v", out, err, st)
		}
		report(t, "fault: job closes stdout and keeps running", "the follower got %q and ended only when the job had (exit %d)", out, st.GetExit())
	})
}

// processesMentioning lists the command lines that have s in them.
func processesMentioning(s string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
		}
	}
	return found
}

// waitLogs waits until the job's output starts with want.
func waitLogs(t testing.TB, c tjobv1.JobClient, id, want string) {
	t.Helper()
	var out []byte
	if !eventually(20*time.Second, func() bool {
		out, _ = logs(ctxT(t), c, id, false)
		return len(out) >= len(want)
	}) || string(out[:len(want)]) != want {
		t.Fatalf("job %s: output %q, want %q first", id, out, want)
	}
}

// TestReliabilitySpoolFull: the spool's file system fills up. The job is not
// disturbed, what was kept stays readable, the Status says what was lost,
// and the server goes on.
func TestReliabilitySpoolFull(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tjob-test-full", dir, "tmpfs", 0, "size=1m,huge=never"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	cfg := testConfig()
	cfg.StateDir = dir
	ts := startServer(t, cfg)
	c := ts.client(t, "alice")
	id := run(t, c, "sh", "-c", "head -c 4194304 /dev/zero; echo still running >&2; exit 5")
	out, err := logs(ctxT(t), c, id, true)
	if err != nil {
		t.Fatal(err)
	}
	st := jobStatus(t, c, id)
	if st.GetExit() != 5 || !strings.Contains(st.GetError(), "no space left on device") {
		t.Fatalf("status: %v", st)
	}
	if len(out) == 0 || len(out) > 1<<20 || len(bytes.Trim(out, "\x00")) != 0 {
		t.Fatalf("kept %d bytes; want a prefix of the zeros", len(out))
	}
	// The server goes on: Status answers, and a new job, which could not
	// be recorded, is refused, naming the disk.
	_, err = c.Run(ctxT(t), &tjobv1.RunRequest{Path: "echo", Args: []string{"hello"}})
	wantCode(t, "Run on a full disk", err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("Run on a full disk: %v", err)
	}
	report(t, "fault: state directory's file system full (1 MiB tmpfs, job writes 4 MiB)", "job exit %d undisturbed; %d KiB kept and readable; error %q; the next Run: %s %q",
		st.GetExit(), len(out)>>10, st.GetError(), status.Code(err), status.Convert(err).Message())
}

// fdCount is how many files this process has open.
func fdCount() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// TestReliabilityDisconnects: 1,000 clients go away in the middle of a Logs
// stream, half by canceling the call (RST_STREAM on a shared connection),
// half by closing their connection. Afterwards the process has no more
// goroutines and no more open files than before. Client and server share
// the process here, so both sides are counted.
func TestReliabilityDisconnects(t *testing.T) {
	ts := startServer(t, testConfig())
	cert := ts.user(t, "alice")
	cfg := ts.clientTLS(&cert)
	conn, c := ts.dial(t, cfg)
	total := 1000
	if scaledDown() && !soak() {
		total = 200
	}
	if soak() {
		total = 5000
	}
	// More output than any window: every stream is mid-flight when its
	// client goes.
	id := run(t, c, "sh", "-c", "head -c 8388608 /dev/zero; echo; exec sleep 1000")
	waitLogs(t, c, id, "\x00")
	// One stream of each kind first, so that what runs once per process
	// (pools, timers) is there before the count.
	disconnect := func(i int) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cc, own := c, (*grpc.ClientConn)(nil)
		if i%2 == 1 {
			var err error
			own, err = grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				return err
			}
			cc = tjobv1.NewJobClient(own)
		}
		stream, err := cc.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true})
		if err == nil {
			_, err = stream.Recv()
		}
		if own != nil {
			own.Close()
		} else {
			cancel()
		}
		return err
	}
	for i := range 2 {
		if err := disconnect(i); err != nil {
			t.Fatal(err)
		}
	}
	settle := func() (int, int) {
		runtime.GC()
		return runtime.NumGoroutine(), fdCount()
	}
	var g0, f0 int
	eventually(5*time.Second, func() bool {
		g, f := settle()
		stable := g == g0 && f == f0
		g0, f0 = g, f
		return stable
	})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapInuse

	var wg sync.WaitGroup
	errs := make(chan error, total)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := disconnect(i); err != nil {
					errs <- err
				}
			}
		})
	}
	var peakG, peakF int
	for i := range total {
		work <- i
		if i%50 == 0 {
			peakG, peakF = max(peakG, runtime.NumGoroutine()), max(peakF, fdCount())
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a client: %v", err)
	}
	var g1, f1 int
	if !eventually(20*time.Second, func() bool { g1, f1 = settle(); return g1 <= g0 && f1 <= f0 }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("after %d disconnects: goroutines %d -> %d, open files %d -> %d\n%s", total, g0, g1, f0, f1, buf[:runtime.Stack(buf, true)])
	}
	runtime.ReadMemStats(&ms)
	if st := jobStatus(t, c, id); st.GetState() != tjobv1.State_STATE_RUNNING {
		t.Fatalf("the job: %v", st.GetState())
	}
	if n := strings.Count(ts.log.String(), "method=tjob.v1.Job/Logs"); n < total {
		t.Errorf("%d Logs calls logged, want %d", n, total)
	}
	_ = conn
	report(t, fmt.Sprintf("fault: %d client disconnects mid-stream", total),
		"half canceled, half closed their connection; goroutines %d before, peak %d, %d after; open files %d before, peak %d, %d after; heap in use %.1f -> %.1f MiB",
		g0, peakG, g1, f0, peakF, f1, float64(heap0)/(1<<20), float64(ms.HeapInuse)/(1<<20))
}

// TestSecurityCAAsClient: the CA's own certificate verifies against itself
// and, with no extended key usage, passes for any use: the server refuses it
// as a client all the same, as it refuses a leaf for servers.
func TestSecurityCAAsClient(t *testing.T) {
	ts := startServer(t, testConfig())
	ca := tls.Certificate{Certificate: [][]byte{ts.ca.Cert.Raw}, PrivateKey: ts.ca.Key, Leaf: ts.ca.Cert}
	before := strings.Count(ts.log.String(), " refused: ")
	_, c := ts.dial(t, ts.clientTLS(&ca))
	_, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	wantCode(t, "Status with the CA's certificate", err, codes.Unavailable)
	if !eventually(5*time.Second, func() bool { return strings.Count(ts.log.String(), " refused: ") > before }) ||
		!strings.Contains(ts.log.String(), "is a CA certificate") {
		t.Fatalf("no refusal in the log:\n%s", ts.log.String())
	}
	if strings.Contains(ts.log.String(), "method=tjob.v1.Job/Status") {
		t.Fatalf("an RPC got through:\n%s", ts.log.String())
	}
}

// TestReliabilityLogStreamsPerUser: a user who opens Logs streams and never
// closes them is held to a number of them, which bounds what the server
// keeps for that user; other users are not affected, and a stream closed
// makes room for another.
func TestReliabilityLogStreamsPerUser(t *testing.T) {
	cfg := testConfig()
	cfg.MaxLogStreams = 4
	ts := startServer(t, cfg)
	alice, bob := ts.client(t, "alice"), ts.client(t, "bob")
	id := run(t, alice, "sh", "-c", "echo x; exec sleep 1000")
	bobs := run(t, bob, "sh", "-c", "echo x; exec sleep 1000")
	open := func(c tjobv1.JobClient, id string) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := c.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true})
		if err == nil {
			_, err = stream.Recv() // the server counts it once it answers
		}
		if err != nil {
			cancel()
		}
		return cancel, err
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for range cfg.MaxLogStreams {
		cancel, err := open(alice, id)
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cancel)
	}
	_, err := open(alice, id)
	wantCode(t, "one stream more", err, codes.ResourceExhausted)
	msg := status.Convert(err).Message()
	cancel, err := open(bob, bobs)
	if err != nil {
		t.Fatalf("bob's stream: %v", err)
	}
	cancel()
	// Non-follow reads count too, and Status still answers.
	_, err = logs(ctxT(t), alice, id, false)
	wantCode(t, "a plain Logs beyond the limit", err, codes.ResourceExhausted)
	jobStatus(t, alice, id)
	cancels[0]()
	if !eventually(10*time.Second, func() bool {
		c, err := open(alice, id)
		if err == nil {
			cancels = append(cancels, c)
		}
		return err == nil
	}) {
		t.Fatal("a closed stream made no room for another")
	}
	report(t, fmt.Sprintf("bad input: a user holds Logs streams open (limit %d per user here, %d by default)", cfg.MaxLogStreams, DefaultMaxLogStreams),
		"the next one gets ResourceExhausted %q; another user's stream opens; one closed makes room for another", msg)
}
