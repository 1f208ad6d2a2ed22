package e2e

// The CLI's Docker-like commands and options end to end: run's limits,
// environment, directory, --attach and --rm; wait, stop, rm, inspect, ps's
// formats and pages, logs where the server cut the output, the
// environment variables, the version, and `tjobs certs -host`.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"golang.org/x/sys/unix"
)

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lines splits output into its lines.
func lines(out string) []string {
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// inspectJSON is `tjob inspect` of ids, decoded.
func (e *env) inspectJSON(t *testing.T, ids ...string) []map[string]any {
	t.Helper()
	var got []map[string]any
	if out := e.ok(t, append([]string{"inspect"}, ids...)...); json.Unmarshal([]byte(out), &got) != nil || len(got) != len(ids) {
		t.Fatalf("inspect %q is not a JSON array of %d objects:\n%s", ids, len(ids), out)
	}
	return got
}

// diskState returns tjobs flags that put its state directory, and with it
// the jobs' workspaces, on a disk: where the tests run, or under
// $TJOB_TEST_BLOCKDIR where that is set (in the test VM, / is not on a
// disk; TJOB_TEST_BLOCKDIR is). It skips the test where the state
// directory would be in memory, which no disk limit throttles and which
// counts against the job's memory.
func diskState(t *testing.T) []string {
	t.Helper()
	if dir := os.Getenv("TJOB_TEST_BLOCKDIR"); dir != "" {
		state, err := os.MkdirTemp(dir, "tjob-state-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(state) })
		return []string{"-state", state}
	}
	dir := jobVisibleDir(t)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	switch st.Type {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC, unix.OVERLAYFS_SUPER_MAGIC:
		t.Skipf("the state directory would be in %s, on a file system of type %#x (stat -f: tmpfs, ramfs or overlay), not on a disk: set TJOB_TEST_BLOCKDIR to a directory on a disk (the test VM does)", dir, st.Type)
	}
	return nil
}

// TestRunAttached: `tjob run -a` streams the job's output and exits as the
// job did, or 125, 126, 127 as `docker run` does.
func TestRunAttached(t *testing.T) {
	e := newEnv(t)
	r := e.tjob(t, "run", "-a", "sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 || string(r.stdout) != "out\nerr\n" || r.stderr != "" {
		t.Fatalf("run -a sh -c 'echo out; echo err >&2; exit 7': %v", r)
	}
	var got []string
	for _, tc := range []struct {
		args []string
		code int
		want string // in the one line on stderr
	}{
		{[]string{"true"}, 0, ""},
		{[]string{"sh", "-c", "kill -9 $$"}, 137, ""},
		{[]string{"/no/such"}, 127, "no such file"},
		{[]string{"no-such-command"}, 127, "not found"},
		{[]string{"/etc/passwd"}, 126, "permission denied"},
		{[]string{"--memory", "4g", "true"}, 125, "limits.memory_mb 4096 is above the server's cap of 2048"},
		{[]string{"-cert", "nope.crt", "true"}, 125, "client certificate file nope.crt does not exist"},
	} {
		r := e.tjob(t, append([]string{"run", "-a"}, tc.args...)...)
		if r.code != tc.code || strings.Count(r.stderr, "\n") != min(len(tc.want), 1) || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("run -a %q: %v; want exit %d, %q", tc.args, r, tc.code, tc.want)
		}
		got = append(got, fmt.Sprintf("%s %d", strings.Join(tc.args, " "), r.code))
	}
	closed := closedAddr(t)
	r = e.tjobAt(t, closed, "run", "-a", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "server not reachable at "+closed) {
		t.Errorf("run -a without a server: %v", r)
	}
	report(t, "bad input: tjob run -a exit statuses", "%s; no server 125", strings.Join(got, "; "))
}

// TestRunAttachedInterrupt: run -a streams the output as the job writes it;
// Ctrl-C stops following with 130, and the job goes on.
func TestRunAttachedInterrupt(t *testing.T) {
	e := newEnv(t)
	e.interruptAfterFirst(t, "run", "-addr", e.addr, "-a", "sh", "-c", "echo first; exec sleep 1000")
	rows := psRows(t, e.ok(t, "ps", "--no-trunc"))
	for _, row := range rows {
		if !strings.Contains(row, `"sh -c 'echo first; exec sleep 1000'"`) || !strings.Contains(row, "Up ") {
			t.Errorf("the job after tjob run -a left: %q", row)
		}
	}
	if len(rows) != 1 {
		t.Errorf("%d jobs running, want the one tjob run -a left", len(rows))
	}
}

// TestRunMemory: --memory 64m lets a job that allocates 50 MiB finish; the
// default (20 MiB) kills it for memory.
func TestRunMemory(t *testing.T) {
	e := newEnv(t)
	dd := []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=50M", "count=1"}
	if r := e.tjob(t, append([]string{"run", "-a", "--memory", "64m"}, dd...)...); r.code != 0 || !strings.Contains(string(r.stdout), "1+0 records out") {
		t.Fatalf("run -a --memory 64m %q: %v", dd, r)
	}
	id := e.runJob(t, dd...)
	if got := e.ok(t, "wait", id); got != "137\n" {
		t.Fatalf("the same with the default memory: wait printed %q", got)
	}
	st := e.inspect(t, id)
	if !st.GetOomKilled() || st.GetLimits().GetMemoryMb() != 20 {
		t.Fatalf("the same with the default memory: oom_killed %v, memory_mb %d", st.GetOomKilled(), st.GetLimits().GetMemoryMb())
	}
	report(t, "load: tjob run --memory", "dd with a 50 MiB buffer exits 0 with --memory 64m, and is killed for memory (137, oom_killed) with the default 20 MiB")
}

// TestRunCPUs: --cpus 0.5 lets a busy loop have half a CPU, as the job's
// CPU time over its run time shows.
func TestRunCPUs(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "--cpus", "0.5", "timeout", "4", "sh", "-c", "while :; do :; done")
	// GNU timeout exits 124 when it ended the loop; busybox's is killed
	// by the SIGTERM it sends (143).
	if got := e.ok(t, "wait", id); got != "124\n" && got != "143\n" {
		t.Fatalf("wait: %q", got)
	}
	st := e.inspect(t, id)
	share := st.GetUsage().GetCpuSecs() / st.GetElapsedSecs()
	// The limit is an upper bound, which load cannot break; a loaded machine
	// may give the job less, but not down to the server's default, 0.2.
	if st.GetLimits().GetCpuPercent() != 50 || share > 0.6 || share < 0.3 {
		t.Fatalf("--cpus 0.5: cpu_percent %d; %.2f CPU s in %.2f s is %.2f of a CPU, want about 0.5",
			st.GetLimits().GetCpuPercent(), st.GetUsage().GetCpuSecs(), st.GetElapsedSecs(), share)
	}
	report(t, "load: tjob run --cpus 0.5", "a busy loop used %.2f CPU s in %.2f s: %.2f of a CPU", st.GetUsage().GetCpuSecs(), st.GetElapsedSecs(), share)
}

// TestRunDeviceWriteBPS: --device-write-bps 2m makes 8 MiB of direct writes
// to the job's workspace take 4 s.
func TestRunDeviceWriteBPS(t *testing.T) {
	e := newEnvWith(t, diskState(t)...)
	id := e.runJob(t, "--device-write-bps", "2m", "dd", "if=/dev/zero", "of=f", "bs=1M", "count=8", "oflag=direct")
	if got := e.ok(t, "wait", id); got != "0\n" {
		t.Fatalf("dd: exit %q: %s", got, e.ok(t, "logs", id))
	}
	st := e.inspect(t, id)
	if st.GetLimits().GetWriteBps() != 2<<20 || st.GetElapsedSecs() < 3.5 || st.GetUsage().GetWriteBytes() < 8<<20 {
		t.Fatalf("--device-write-bps 2m: write_bps %d; 8 MiB written in %.2f s (write_bytes %d), want at least 3.5 s:\n%s",
			st.GetLimits().GetWriteBps(), st.GetElapsedSecs(), st.GetUsage().GetWriteBytes(), e.ok(t, "logs", id))
	}
	report(t, "load: tjob run --device-write-bps 2m", "dd wrote 8 MiB (oflag=direct) in its workspace in %.2f s", st.GetElapsedSecs())
}

// TestRunWorkspaceOnDisk: the workspace is on disk, not in the job's
// memory: a job with --memory 20m writes a 64 MiB file there.
func TestRunWorkspaceOnDisk(t *testing.T) {
	e := newEnvWith(t, diskState(t)...)
	r := e.tjob(t, "run", "-a", "--memory", "20m", "sh", "-c", "dd if=/dev/zero of=big bs=1M count=64 2>/dev/null && wc -c < big")
	if r.code != 0 || strings.TrimSpace(string(r.stdout)) != strconv.Itoa(64<<20) {
		t.Fatalf("a 64 MiB file with --memory 20m: %v", r)
	}
	report(t, "load: a 64 MiB file in the workspace of a job with --memory 20m", "written, exit 0")
}

// TestRunEnv: -e and --env-file are the job's environment, -e winning.
func TestRunEnv(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(e.dir, "job.env"), []byte("# settings\nFROM_FILE=from the file\nBOTH=file\n  INDENTED=yes\nPASSED\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.tjobEnv(t, []string{"PASSED=from tjob's environment"}, "run", "-addr", e.addr, "-a",
		"--env-file", "job.env", "-e", "BOTH=flag", "-e", "SPACED= x y ", "--env", "PASSED",
		"sh", "-c", `printf '%s|' "$FROM_FILE" "$BOTH" "$INDENTED" "$SPACED" "$PASSED" "$HOME"`)
	if want := "from the file|flag|yes| x y |from tjob's environment|/tmp|"; r.code != 0 || string(r.stdout) != want {
		t.Fatalf("the job's environment: %v\nwant stdout %q", r, want)
	}
	fails(t, e.tjob(t, "run", "--env-file", "missing.env", "true"), 1, "--env-file", "missing.env")
	os.WriteFile(filepath.Join(e.dir, "bad.env"), []byte("OK=1\nA B=2\n"), 0o644)
	fails(t, e.tjob(t, "run", "--env-file", "bad.env", "true"), 1, "bad.env, line 2", `"A B"`)
}

// TestRunWorkdir: -w is the job's working directory, in its workspace.
func TestRunWorkdir(t *testing.T) {
	check := func(e *env) {
		t.Helper()
		for _, dir := range []string{"/tmp/sub/dir", "a/b"} {
			r := e.tjob(t, "run", "-a", "-w", dir, "sh", "-c", "pwd; echo x > f; cat /tmp/"+strings.TrimPrefix(dir, "/tmp/")+"/f")
			want := filepath.Join("/tmp", strings.TrimPrefix(dir, "/tmp/")) + "\nx\n"
			if r.code != 0 || string(r.stdout) != want {
				t.Errorf("-w %s: %v, want stdout %q", dir, r, want)
			}
		}
	}
	// Where the server is told which disks to limit (a VM's initramfs is
	// on no disk).
	if dev := deviceOf(t, jobVisibleDir(t)); fileExists("/sys/dev/block/" + dev) {
		check(newEnvWith(t, "-io-devices", dev))
	}
	e := newEnv(t)
	for _, dir := range []string{"../up", "/etc"} {
		fails(t, e.tjob(t, "run", "-w", dir, "true"), 1, "dir", dir, "leaves the job's workspace")
	}
	check(e)
}

// TestRunCaps: a limit above the server's cap is refused, naming the
// field, the value and the cap; nothing runs.
func TestRunCaps(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		flag, value, want string
	}{
		{"--memory", "4g", "limits.memory_mb 4096 is above the server's cap of 2048 (-max-memory-mb)"},
		{"--cpus", "2", "limits.cpu_percent 200 is above the server's cap of 100 (-max-cpu-percent)"},
		{"--pids-limit", "5000", "limits.pids_max 5000 is above the server's cap of 4096 (-max-pids)"},
		{"--device-read-bps", "1g", "limits.read_bps 1073741824 is above the server's cap of 209715200 (-max-read-bps)"},
		{"--device-write-bps", "1g", "limits.write_bps 1073741824 is above the server's cap of 209715200 (-max-write-bps)"},
	} {
		r := e.tjob(t, "run", tc.flag, tc.value, "true")
		fails(t, r, 1, tc.want)
		report(t, "bad input: tjob run "+tc.flag+" "+tc.value, "exit 1: %q", strings.TrimSpace(r.stderr))
	}
	if got := e.ok(t, "ps", "-a", "-q"); got != "" {
		t.Fatalf("jobs after refused runs: %q", got)
	}
}

// TestWait: wait prints each job's exit code once it has ended, and names
// a job it cannot wait for.
func TestWait(t *testing.T) {
	e := newEnv(t)
	seven := e.runJob(t, "sh", "-c", "exit 7")
	later := e.runJob(t, "sh", "-c", "sleep 1; exit 3")
	r := e.tjob(t, "run", "no-such-command")
	failed := regexp.MustCompile(`\(job ([0-9a-f]{8})\)`).FindStringSubmatch(r.stderr)
	if r.code != 1 || failed == nil {
		t.Fatalf("run no-such-command: %v", r)
	}
	if got := e.ok(t, "wait", seven); got != "7\n" {
		t.Fatalf("wait: %q", got)
	}
	r = e.tjob(t, "wait", seven[:8], later, "ffff0000", failed[1])
	if string(r.stdout) != "7\n3\n127\n" {
		t.Errorf("wait of three jobs and a missing one: stdout %q", r.stdout)
	}
	fails(t, r, 1, "no such job", "ffff0000")
}

// TestInspect: inspect is a JSON array of the jobs' full statuses, with the
// command line exactly as given.
func TestInspect(t *testing.T) {
	e := newEnv(t)
	args := []string{"echo", "a b", "c", `d"e`, "", "$HOME", "ünï", "it's"}
	id := e.runJob(t, append([]string{"--memory", "64m", "-e", "K=v", "--stop-timeout", "3"}, args...)...)
	e.ok(t, "wait", id)
	st := e.inspectJSON(t, id[:8])[0]
	var gotArgs []string
	for _, a := range st["args"].([]any) {
		gotArgs = append(gotArgs, a.(string))
	}
	limits := st["limits"].(map[string]any)
	if !slices.Equal(gotArgs, args) || st["job_id"] != id || st["exit"] != "0" || st["state"] != "STATE_EXITED" ||
		st["owner"] != "cli" || limits["memory_mb"] != "64" || st["grace_period"] != "3s" || fmt.Sprint(st["env"]) != "[K=v]" {
		t.Fatalf("inspect: args %q, want %q; the rest: %v", gotArgs, args, st)
	}
	// A missing job is named; the others are printed still.
	r := e.tjob(t, "inspect", "ffff0000", id)
	var got []map[string]any
	if json.Unmarshal(r.stdout, &got) != nil || len(got) != 1 || got[0]["job_id"] != id {
		t.Errorf("inspect with a missing job: stdout %s", r.stdout)
	}
	fails(t, r, 1, "no such job", "ffff0000")
}

// TestPSFormats: ps quotes commands as a shell would need them and lists
// every page of jobs, as a table, as IDs and as JSON.
func TestPSFormats(t *testing.T) {
	e := newEnv(t)
	echo := e.runJob(t, "echo", "a b", "c")
	e.ok(t, "wait", echo)
	// Statuses of some 120 KiB each: the server pages before 1 MiB.
	big := strings.Repeat("x", 120<<10)
	ids := []string{echo}
	for range 11 {
		ids = append(ids, e.runJob(t, "true", big))
	}
	first, err := e.client(t, "cli").Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil || first.GetNextPageToken() == "" || len(first.GetJobs()) >= len(ids) {
		t.Fatalf("the server's first page has %d of %d jobs and no next page (%v): the test does not page", len(first.GetJobs()), len(ids), err)
	}
	slices.Reverse(ids) // newest first

	if got := lines(e.ok(t, "ps", "-a", "-q")); !slices.Equal(got, ids) {
		t.Errorf("ps -a -q: %q, want %q", got, ids)
	}
	var all []map[string]any
	out := e.ok(t, "ps", "-a", "--format", "json")
	if err := json.Unmarshal([]byte(out), &all); err != nil || len(all) != len(ids) {
		t.Fatalf("ps -a --format json: %v, %d objects, want %d", err, len(all), len(ids))
	}
	for i, j := range all {
		if j["job_id"] != ids[i] {
			t.Errorf("ps --format json: job %d is %v, want %s", i, j["job_id"], ids[i])
		}
	}
	rows := psRows(t, e.ok(t, "ps", "-a"))
	if len(rows) != len(ids) || !strings.Contains(rows[echo[:8]], `"echo 'a b' c"`) {
		t.Errorf("ps -a: %d rows; the echo: %q", len(rows), rows[echo[:8]])
	}
	if out := e.ok(t, "ps", "-a", "--no-trunc"); !strings.Contains(out, echo+`   "echo 'a b' c"`) || !strings.Contains(out, `"true `+big+`"`) {
		t.Errorf("ps -a --no-trunc does not have the full ID and command")
	}
	report(t, "load: ps of more jobs than a page", "ps -a, -q and --format json list all %d jobs (the server's first page had %d)", len(ids), len(first.GetJobs()))
}

// TestEnvironment: TJOB_ADDR, TJOB_CERT_PATH and TJOB_USER say where the
// server and the certificates are; flags win; errors name them.
func TestEnvironment(t *testing.T) {
	e := newEnv(t)
	elsewhere := filepath.Join(e.dir, "elsewhere")
	os.Mkdir(elsewhere, 0o700)
	for _, f := range []string{"ca.crt", "bob.crt", "bob.key"} {
		b, err := os.ReadFile(filepath.Join(e.dir, ".tjob", f))
		if err == nil {
			err = os.WriteFile(filepath.Join(elsewhere, f), b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	bob := []string{"TJOB_ADDR=" + e.addr, "TJOB_CERT_PATH=" + elsewhere, "TJOB_USER=bob"}
	r := e.tjobEnv(t, bob, "run", "echo", "bob's")
	id := strings.TrimSpace(string(r.stdout))
	if r.code != 0 || len(id) != 36 {
		t.Fatalf("run with TJOB_*: %v", r)
	}
	if r := e.tjobEnv(t, bob, "ps", "-a", "-q"); r.code != 0 || string(r.stdout) != id+"\n" {
		t.Errorf("bob's ps -a -q: %v", r)
	}
	if got := e.ok(t, "ps", "-a", "-q"); got != "" {
		t.Errorf("cli's ps -a -q has bob's job: %q", got)
	}
	closed := closedAddr(t)
	if r := e.tjobEnv(t, append(bob, "TJOB_ADDR="+closed), "ps", "-a", "-q", "-addr", e.addr); r.code != 0 || string(r.stdout) != id+"\n" {
		t.Errorf("-addr over TJOB_ADDR: %v", r)
	}
	fails(t, e.tjobEnv(t, []string{"TJOB_ADDR=" + closed}, "ps"), 1, "server not reachable at "+closed, "set -addr or TJOB_ADDR")
	fails(t, e.tjobEnv(t, []string{"TJOB_ADDR=" + e.addr, "TJOB_CERT_PATH=missing"}, "ps"), 1,
		"CA certificate file missing/ca.crt does not exist (set -ca or TJOB_CERT_PATH, or make certificates with 'tjobs certs')")
	fails(t, e.tjobEnv(t, []string{"TJOB_ADDR=" + e.addr, "TJOB_USER=carol"}, "ps"), 1,
		"client certificate file .tjob/carol.crt does not exist (set -cert, TJOB_CERT_PATH or TJOB_USER")
	report(t, "bad input: tjob without a server or certificates, from the environment", "%q", strings.TrimSpace(e.tjobEnv(t, nil, "ps").stderr))
}

// TestRm: rm refuses a running job unless -f, names what it could not
// remove, and run --rm leaves nothing behind once the job has ended.
func TestRm(t *testing.T) {
	e := newEnv(t)
	running := e.runJob(t, "sleep", "1000")
	refused := e.tjob(t, "rm", running[:8])
	fails(t, refused, 1, running, "is running", "tjob rm -f")
	if row := psRows(t, e.ok(t, "ps"))[running[:8]]; !strings.Contains(row, "Up ") {
		t.Fatalf("after a refused rm: %q", row)
	}
	if got := e.ok(t, "rm", "-f", running[:8]); got != running+"\n" {
		t.Fatalf("rm -f printed %q", got)
	}
	fails(t, e.tjob(t, "logs", running), 1, "no such job")

	a, b := e.runJob(t, "echo", "a"), e.runJob(t, "echo", "b")
	e.ok(t, "wait", a, b)
	r := e.tjob(t, "rm", a, "ffff0000", b[:8])
	if string(r.stdout) != a+"\n"+b+"\n" {
		t.Errorf("rm of two jobs and a missing one: stdout %q", r.stdout)
	}
	fails(t, r, 1, "no such job", "ffff0000")

	auto := e.runJob(t, "--rm", "sh", "-c", "echo gone")
	if !eventually(30*time.Second, func() bool { return !strings.Contains(e.ok(t, "ps", "-a", "-q"), auto) }) {
		t.Fatalf("run --rm: the ended job is still listed")
	}
	// Attached, the server removes the job once tjob's Wait has its exit status.
	r = e.tjob(t, "run", "-a", "--rm", "sh", "-c", "echo attached; exit 5")
	if r.code != 5 || string(r.stdout) != "attached\n" || r.stderr != "" {
		t.Fatalf("run -a --rm: %v", r)
	}
	if got := e.ok(t, "ps", "-a", "-q"); got != "" {
		t.Fatalf("jobs left: %q", got)
	}
	var left []string
	filepath.WalkDir(filepath.Join(e.dir, ".tjob", "state"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.Contains(d.Name(), auto) || strings.Contains(d.Name(), running)) {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("files of removed jobs: %q", left)
	}
	report(t, "fault: rm of a running job", "refused without -f (%q); rm -f stopped and removed it; run --rm and run -a --rm left no job and no file", strings.TrimSpace(refused.stderr))
}

// TestStopMany: stop -t 3 of two jobs that ignore SIGTERM stops both at
// once: each has had its SIGTERM before either is killed, 3 s later. (A
// SIGTERM that comes while the shell starts its next sleep reaches the
// shell only: its trap then waits for that sleep, up to a second.)
func TestStopMany(t *testing.T) {
	e := newEnv(t)
	// /proc/uptime is a clock the job and the test share, in busybox too.
	script := `trap 'read up idle < /proc/uptime; echo TERM $up' TERM; echo up; while :; do sleep 1; done`
	a := e.runJob(t, "--stop-timeout", "1h", "sh", "-c", script)
	b := e.runJob(t, "--stop-timeout", "1h", "sh", "-c", script)
	if !eventually(time.Minute, func() bool { return e.ok(t, "logs", a) == "up\n" && e.ok(t, "logs", b) == "up\n" }) {
		t.Fatal("the jobs did not start")
	}
	// Their own grace period is an hour: a stop that took it would not
	// return in minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := e.runTjob(t, e.command(ctx, nil, "stop", "-addr", e.addr, "-t", "3", a, b[:8]))
	if r.code != 0 || string(r.stdout) != a+"\n"+b+"\n" || r.stderr != "" {
		t.Fatalf("stop -t 3 of two jobs: %v", r)
	}
	var term, stopped []time.Time
	for _, id := range []string{a, b} {
		// The shell also says its sleep was "Terminated".
		out := e.ok(t, "logs", id)
		m := regexp.MustCompile(`\nTERM ([0-9.]+)\n`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("job %s's output has no TERM line: %q", id, out)
		}
		st := e.inspect(t, id)
		term, stopped = append(term, uptimeToWall(t, m[1])), append(stopped, st.GetStopped().AsTime())
		if st.GetExit() != 137 || !st.GetStopRequested() {
			t.Fatalf("job %s: exit %d, stop_requested %v", id, st.GetExit(), st.GetStopRequested())
		}
		if row := psRows(t, e.ok(t, "ps", "-a"))[id[:8]]; !strings.Contains(row, "Exited (137) ") || !strings.HasSuffix(row, " ago (stopped)") {
			t.Errorf("ps -a: %q", row)
		}
	}
	lastTerm := slices.MaxFunc(term, time.Time.Compare)
	firstKill := slices.MinFunc(stopped, time.Time.Compare)
	if !lastTerm.Before(firstKill) {
		t.Errorf("one job was killed (%v) before the other had its SIGTERM (%v): not stopped at once", firstKill, lastTerm)
	}
	for i := range term {
		if grace := stopped[i].Sub(term[i]); grace < 1800*time.Millisecond { // 3 s, less the sleep the trap waited for
			t.Errorf("job %d was killed %v after its SIGTERM, not after -t 3", i, grace)
		}
	}
	r = e.tjob(t, "stop", "ffff0000", a)
	if string(r.stdout) != a+"\n" {
		t.Errorf("stop of a missing job and an ended one: stdout %q", r.stdout)
	}
	fails(t, r, 1, "no such job", "ffff0000")
	if t.Failed() {
		return
	}
	report(t, "fault: stop -t 3 of two jobs that ignore SIGTERM", "both had SIGTERM before either was killed; killed %v and %v after it (exit 137)",
		stopped[0].Sub(term[0]).Round(time.Millisecond), stopped[1].Sub(term[1]).Round(time.Millisecond))
}

// TestLogsCut: where the server kept only the first -max-output bytes,
// logs and run -a give those and say so on stderr.
func TestLogsCut(t *testing.T) {
	e := newEnvWith(t, "-max-output", "1k")
	script := "i=0; while [ $i -lt 500 ]; do echo 123456789; i=$((i+1)); done"
	want := strings.Repeat("123456789\n", 500)[:1024]
	const notice = "tjob: the output was cut at 1024 bytes (the server keeps at most that much of a job's output)\n"
	id := e.runJob(t, "sh", "-c", script)
	for _, args := range [][]string{{"logs", "-f", id}, {"logs", id}, {"run", "-a", "sh", "-c", script}} {
		if r := e.tjob(t, args...); r.code != 0 || string(r.stdout) != want || r.stderr != notice {
			t.Errorf("%q: exit %d, %d bytes, stderr %q", args, r.code, len(r.stdout), r.stderr)
		}
	}
	if r := e.tjob(t, "run", "-a", "echo", "short"); r.stderr != "" {
		t.Errorf("a job's whole output: stderr %q", r.stderr)
	}
}

// TestVersion: tjob --version and tjob version say what `go version -m`
// says of the binary.
func TestVersion(t *testing.T) {
	requireRoot(t)
	tjob := filepath.Join(binDir, "tjob")
	var outs []string
	for _, arg := range []string{"--version", "version"} {
		out, err := exec.Command(tjob, arg).Output()
		if err != nil {
			t.Fatalf("tjob %s: %v", arg, err)
		}
		outs = append(outs, string(out))
	}
	if outs[0] != outs[1] || !strings.HasPrefix(outs[0], "tjob ") || strings.Count(outs[0], "\n") != 1 {
		t.Fatalf("tjob --version %q, tjob version %q", outs[0], outs[1])
	}
	info, err := exec.Command("go", "version", "-m", tjob).Output()
	if err != nil {
		t.Skipf("go version -m: %v", err)
	}
	want := "(commit not recorded)"
	if m := regexp.MustCompile(`\tvcs\.revision=([0-9a-f]+)`).FindSubmatch(info); m != nil {
		want = "commit " + string(m[1])
	}
	mod := regexp.MustCompile(`\tmod\t\S+\t(\S+)`).FindSubmatch(info)
	if mod == nil || !strings.HasPrefix(outs[0], "tjob "+string(mod[1])+" ") || !strings.Contains(outs[0], want) {
		t.Fatalf("tjob version says %q; go version -m says:\n%s", outs[0], info)
	}
}

// TestCertsHost: tjobs certs -host makes a server certificate for more
// names; without them, or from another CA, the CLI says what is wrong.
func TestCertsHost(t *testing.T) {
	requireRoot(t)
	dir := jobVisibleDir(t)
	certs := func(args ...string) string {
		t.Helper()
		out, err := execTjobs(dir, append([]string{"certs"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tjobs certs %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := certs("-host", "127.0.0.2,tjobs.test"); !strings.Contains(out, "(server: localhost, 127.0.0.1, ::1, 127.0.0.2, tjobs.test)") {
		t.Fatalf("tjobs certs -host:\n%s", out)
	}
	e := startTjobs(t, dir, "-addr", "127.0.0.2:0")
	e.ok(t, "ps")

	svc, _ := os.ReadFile(filepath.Join(dir, ".tjob", "svc.crt"))
	out := certs("-host", "other.test")
	if again, _ := os.ReadFile(filepath.Join(dir, ".tjob", "svc.crt")); !bytes.Equal(svc, again) || !strings.Contains(out, "kept") || !strings.Contains(out, "not valid for other.test") {
		t.Fatalf("tjobs certs -host other.test over an existing svc.crt:\n%s", out)
	}

	// A server whose certificate lacks the name the client uses.
	plain := newEnvWith(t, "-addr", "127.0.0.2:0")
	fails(t, plain.tjob(t, "ps"), 1, "not valid for 127.0.0.2", "tjobs certs -host 127.0.0.2")
	// A CA that did not sign the server's certificate: both are named.
	caNames := regexp.MustCompile(`"(tjob CA [0-9a-f]{6})"`)
	r := e.tjob(t, "ps", "-ca", filepath.Join(plain.dir, ".tjob", "ca.crt"))
	names := caNames.FindAllStringSubmatch(r.stderr, -1)
	if len(names) != 2 || names[0][1] == names[1][1] {
		t.Fatalf("the wrong CA: %v; want the server's CA and the one given named", r)
	}
	fails(t, r, 1, "is signed by", "not by the CA in")
	report(t, "security: the server's certificate for another name, or from another CA", "%q", strings.TrimSpace(r.stderr))
}

// uptimeToWall is the wall-clock time of an uptime in seconds, as
// /proc/uptime gives it.
func uptimeToWall(t *testing.T, uptime string) time.Time {
	t.Helper()
	then, err := strconv.ParseFloat(uptime, 64)
	if err != nil {
		t.Fatalf("uptime %q: %v", uptime, err)
	}
	b, err := os.ReadFile("/proc/uptime")
	now := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	up, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatalf("/proc/uptime %q: %v", b, err)
	}
	return now.Add(-time.Duration((up - then) * float64(time.Second)))
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
