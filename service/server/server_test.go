package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRoundTrip: Run, Status, Logs and Stop, as a client sees them.
func TestRoundTrip(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")

	id := run(t, c, "sh", "-c", "echo hello; echo oops >&2; exit 3")
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("job ID %q: %v", id, err)
	}
	st := wait(t, c, id)
	if st.GetExit() != 3 || st.GetSignal() != 0 || st.GetOwner() != "alice" || st.GetCmd() != "sh -c echo hello; echo oops >&2; exit 3" {
		t.Errorf("status: %v", st)
	}
	if st.GetStarted() == nil || st.GetStopped() == nil || st.GetStopped().AsTime().Before(st.GetStarted().AsTime()) {
		t.Errorf("times: started %v stopped %v", st.GetStarted(), st.GetStopped())
	}
	out, err := logs(ctxT(t), c, id, false)
	if err != nil || string(out) != "hello\noops\n" {
		t.Errorf("Logs: %q, %v", out, err)
	}

	// Running jobs only, unless all.
	sleeper := run(t, c, "sleep", "1000")
	resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetJobs()) != 1 || resp.GetJobs()[0].GetJobId() != sleeper || resp.GetJobs()[0].Exit != nil {
		t.Fatalf("running jobs: %v", resp.GetJobs())
	}
	resp, err = c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetJobs()) != 2 || resp.GetJobs()[0].GetJobId() != sleeper {
		t.Fatalf("all jobs, newest first: %v", resp.GetJobs())
	}

	// Stop ends it with SIGTERM and returns its final status; again is fine.
	stop, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: sleeper[:8]})
	if err != nil {
		t.Fatal(err)
	}
	if st := stop.GetStatus(); st.GetState() != tjobv1.State_STATE_EXITED || st.GetExit() != 143 || st.GetSignal() != 15 || !st.GetStopRequested() {
		t.Fatalf("stopped: %v", st)
	}
	if _, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: sleeper}); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}

// TestRunErrors: a job that cannot start is a job with an error; a request
// that cannot be a job is InvalidArgument.
func TestRunErrors(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")

	resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "no-such-command"})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetStatus()
	if st.GetState() != tjobv1.State_STATE_FAILED || st.GetExit() != -1 || !strings.Contains(st.GetError(), "no-such-command") || strings.Contains(st.GetError(), "tjob:") {
		t.Fatalf("failed job: %v", st)
	}
	_, err = logs(ctxT(t), c, resp.GetJobId(), false)
	wantCode(t, "Logs of a failed job", err, codes.FailedPrecondition)
	if _, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: resp.GetJobId()}); err != nil {
		t.Fatalf("Stop of a failed job: %v", err)
	}

	_, err = c.Run(ctxT(t), &tjobv1.RunRequest{})
	wantCode(t, "Run with no path", err, codes.InvalidArgument)
	_, err = c.Run(ctxT(t), &tjobv1.RunRequest{Path: "echo", Args: []string{"a\x00b"}})
	wantCode(t, "Run with a NUL byte", err, codes.InvalidArgument)
	_, err = c.Stop(ctxT(t), &tjobv1.StopRequest{})
	wantCode(t, "Stop with no ID", err, codes.InvalidArgument)

	all, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetJobs()) != 1 {
		t.Fatalf("invalid requests left jobs: %v", all.GetJobs())
	}
}

// TestPrefix: a unique prefix names a job; an ambiguous one lists the jobs.
func TestPrefix(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")

	// Run jobs until two share a first character (at most 17 by pigeonhole).
	byFirst := map[byte][]string{}
	var shared []string
	for len(shared) == 0 {
		id := run(t, c, "true")
		byFirst[id[0]] = append(byFirst[id[0]], id)
		if len(byFirst[id[0]]) == 2 {
			shared = byFirst[id[0]]
		}
	}
	prefix := shared[0][:1]
	_, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: prefix})
	wantCode(t, "ambiguous prefix", err, codes.InvalidArgument)
	for _, id := range shared {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("%v does not list %s", err, id)
		}
	}
	// The shortest prefix that is unique.
	for _, id := range shared {
		n := 1
		for strings.HasPrefix(shared[0], id[:n]) && strings.HasPrefix(shared[1], id[:n]) {
			n++
		}
		if st := jobStatus(t, c, id[:n]); st.GetJobId() != id {
			t.Errorf("prefix %s: got %s, want %s", id[:n], st.GetJobId(), id)
		}
	}
	_, err = c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: "zzz"})
	wantCode(t, "unknown prefix", err, codes.NotFound)
}

// TestBinaryOutput: output comes back byte for byte, NULs and invalid UTF-8
// included, in more than one message.
func TestBinaryOutput(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	data := make([]byte, 300<<10+7)
	rand.Read(data)
	file := filepath.Join(jobVisibleDir(t), "data")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	id := run(t, c, "cat", file)
	wait(t, c, id)
	for _, follow := range []bool{false, true} {
		out, err := logs(ctxT(t), c, id, follow)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("follow=%v: got %d bytes, want %d, equal prefix %d", follow, len(out), len(data), commonPrefix(out, data))
		}
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestFollowers: 50 clients follow one job from before it writes to after
// it ends, each at its own pace, and all get the same bytes.
func TestFollowers(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	const followers = 50
	// The job waits for the followers to be attached, then writes.
	gate := filepath.Join(jobVisibleDir(t), "gate")
	id := run(t, c, "sh", "-c", fmt.Sprintf(
		`while [ ! -e %s ]; do sleep 0.05; done; i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); [ $((i %% 50)) = 0 ] && sleep 0.05; done; head -c 100000 /dev/zero`, gate))

	outs := make([][]byte, followers)
	errs := make([]error, followers)
	var attached, wg sync.WaitGroup
	for i := range followers {
		attached.Add(1)
		wg.Go(func() {
			// Half share a connection, half have their own.
			fc := c
			if i%2 == 1 {
				fc = ts.client(t, "alice")
			}
			stream, err := fc.Logs(ctxT(t), &tjobv1.LogsRequest{JobId: id, Follow: true})
			attached.Done()
			if err != nil {
				errs[i] = err
				return
			}
			for {
				msg, err := stream.Recv()
				if err != nil {
					if err.Error() != "EOF" {
						errs[i] = err
					}
					return
				}
				outs[i] = append(outs[i], msg.GetData()...)
				if i%10 == 0 {
					time.Sleep(time.Millisecond) // a slow reader
				}
			}
		})
	}
	attached.Wait()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	var want bytes.Buffer
	for i := range 300 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	want.Write(make([]byte, 100000))
	for i := range followers {
		if errs[i] != nil {
			t.Fatalf("follower %d: %v", i, errs[i])
		}
		if !bytes.Equal(outs[i], want.Bytes()) {
			t.Fatalf("follower %d: %d bytes, want %d (equal prefix %d)", i, len(outs[i]), want.Len(), commonPrefix(outs[i], want.Bytes()))
		}
	}
}

// TestFollowerLeaves: a follower that goes away mid-stream frees its stream
// at once, and the job goes on.
func TestFollowerLeaves(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	id := run(t, c, "sh", "-c", "while true; do echo tick; sleep 0.01; done")
	jobStatus(t, c, id)
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := c.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// The server's own count of open streams, which its stream limit
	// goes by; the goroutines of a stream end with it.
	if !eventually(5*time.Second, func() bool { return ts.openStreams("alice") == 0 }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d streams still open after the followers left\n%s", ts.openStreams("alice"), buf[:runtime.Stack(buf, true)])
	}
	if !strings.Contains(ts.log.String(), "code=Canceled") {
		t.Errorf("no canceled stream in the log:\n%s", ts.log.String())
	}
	if st := jobStatus(t, c, id); st.GetState() != tjobv1.State_STATE_RUNNING {
		t.Fatalf("job: %v", st.GetState())
	}
}

// TestMasked: a job cannot read the server's keys, the CA's or another
// job's output.
func TestMasked(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	secret := run(t, c, "echo", "alice's secret")
	wait(t, c, secret)
	if _, err := os.Stat(filepath.Join(ts.spool, secret+".out")); err != nil {
		t.Fatalf("the output is not where the test looks: %v", err)
	}

	probe := run(t, c, "sh", "-c", fmt.Sprintf("cat %s %s; ls -A %s %s; cat %s",
		ts.path("svc.key"), ts.path("alice.key"), ts.dir, ts.spool, filepath.Join(ts.spool, secret+".out")))
	wait(t, c, probe)
	out, err := logs(ctxT(t), c, probe, false)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("PRIVATE KEY")) || bytes.Contains(out, []byte("secret")) {
		t.Fatalf("the job read what it must not:\n%s", out)
	}
	// ls lists nothing in either directory.
	for _, line := range strings.Split(string(out), "\n") {
		if line == "svc.key" || line == "ca.crt" || line == secret+".out" {
			t.Fatalf("the job listed %s:\n%s", line, out)
		}
	}
	if !bytes.Contains(out, []byte("svc.key")) || !bytes.Contains(out, []byte("No such file")) {
		t.Fatalf("the job's view is not what the test expects:\n%s", out)
	}
}

// TestCleanup: a new server removes the output files and workspaces that no
// record claims (a crashed server left them), and nothing else.
func TestCleanup(t *testing.T) {
	requireRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	id := uuid.NewString()
	left := filepath.Join(state, spoolDir, id+".out")
	work := filepath.Join(state, workDir, id)
	other := filepath.Join(state, spoolDir, "notes.txt")
	os.MkdirAll(work, 0o700)
	os.MkdirAll(filepath.Dir(left), 0o700)
	for _, f := range []string{left, other} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig()
	cfg.StateDir = state
	ts := startServer(t, cfg)
	for _, f := range []string{left, work} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", f, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("%s was removed: %v", other, err)
	}
	if !strings.Contains(ts.log.String(), "removed 2 files of jobs with no record") || !strings.Contains(ts.log.String(), "output "+id) {
		t.Errorf("cleanup not logged:\n%s", ts.log.String())
	}
}

// TestLogLines: one line per RPC, with time, user, method, job and code.
func TestLogLines(t *testing.T) {
	ts := startServer(t, testConfig())
	c := ts.client(t, "alice")
	id := run(t, c, "true")
	wait(t, c, id)
	jobStatus(t, c, id)
	c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: "nope"})
	log := ts.log.String()
	for _, want := range []string{
		" user=alice method=tjob.v1.Job/Run job=" + id + " code=OK dur=",
		" user=alice method=tjob.v1.Job/Logs job=" + id + " code=OK dur=",
		" user=alice method=tjob.v1.Job/Wait job=" + id + " code=OK dur=",
		" user=alice method=tjob.v1.Job/Status job=" + id + " code=OK dur=",
		` user=alice method=tjob.v1.Job/Stop job=nope code=NotFound dur=`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if !strings.Contains(line, " user=") {
			continue
		}
		if _, err := time.Parse(timeFormat, strings.Fields(line)[0]); err != nil {
			t.Errorf("line without a time: %q", line)
		}
	}
}

// TestShutdown: shutting down ends follow streams, stops every job, also
// one that ignores SIGTERM, and leaves no process or cgroup; the jobs'
// records and outputs stay for the next server.
func TestShutdown(t *testing.T) {
	cfg := testConfig()
	cfg.GracePeriod = 500 * time.Millisecond
	// Alice's two jobs end by the shutdown's end, one past this: the
	// shutdown keeps both anyway, for the next server's retention.
	cfg.Retain = 1
	ts := startServer(t, cfg)
	c := ts.client(t, "alice")
	b := ts.client(t, "bob")
	const marker1, marker2 = "3141.5926", "2718.2818"
	ids := []string{
		run(t, c, "sleep", marker1),
		run(t, b, "sh", "-c", "trap '' TERM; sleep "+marker2+"; sleep "+marker2),
		run(t, c, "echo", "done"),
	}
	wait(t, c, ids[2]) // ended before the shutdown, which stops the other two
	if !eventually(5*time.Second, func() bool { return len(processesWith(marker1)) > 0 && len(processesWith(marker2)) > 0 }) {
		t.Fatal("the jobs' processes are not where the test looks")
	}
	if cgs := cgroupsNamed(ids[:2]); len(cgs) == 0 {
		t.Fatal("the jobs' cgroups are not where the test looks")
	}
	stream, err := c.Logs(ctxT(t), &tjobv1.LogsRequest{JobId: ids[0], Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	followErr := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				followErr <- err
				return
			}
		}
	}()
	if !eventually(5*time.Second, func() bool { return ts.openStreams("alice") == 1 }) { // the stream reaches the server
		t.Fatal("the Logs stream did not reach the server")
	}

	start := time.Now()
	ts.shutdown()
	t.Logf("shutdown took %v", time.Since(start).Round(time.Millisecond))
	// The follower's stream ends with the shutdown, not when the drain
	// period for calls still running is over.
	if strings.Contains(ts.log.String(), "shutdown: cutting off calls") {
		t.Errorf("the shutdown waited for the Logs follower:\n%s", ts.log.String())
	}
	select {
	case err := <-followErr:
		wantCode(t, "follower at shutdown", err, codes.Unavailable)
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not end")
	}
	for _, m := range []string{marker1, marker2} {
		if pids := processesWith(m); len(pids) > 0 {
			t.Errorf("processes left with %s: %v", m, pids)
		}
	}
	if cgs := cgroupsNamed(ids); len(cgs) > 0 {
		t.Errorf("cgroups left: %v", cgs)
	}
	if ents, _ := os.ReadDir(ts.spool); len(ents) != len(ids) {
		t.Errorf("outputs kept: %v, want the %d jobs'", ents, len(ids))
	}
	log := ts.log.String()
	if !strings.Contains(log, "shutdown: stopping 2 running jobs; keeping 3 jobs' records") || !strings.Contains(log, "shutdown: done") {
		t.Errorf("shutdown not logged:\n%s", log)
	}
	// No job left a stray error behind.
	if strings.Contains(log, "shutdown: job ") {
		t.Errorf("errors at shutdown:\n%s", log)
	}
}

// TestShutdownDuringRuns: a shutdown that comes while Runs are starting
// jobs stops every job that was started, however far its Run had got, and
// returns; the Runs it cut off fail with Unavailable. The race it guards
// (a Run between its job's entry and the job's start, which the shutdown
// could stop before it started) is too short to hit at will, and the old
// code passed too: the shutdown now waits for such Runs by construction.
func TestShutdownDuringRuns(t *testing.T) {
	cfg := testConfig()
	cfg.GracePeriod = 200 * time.Millisecond
	ts := startServer(t, cfg)
	c := ts.client(t, "alice")
	// A day and more: a job the shutdown missed would hold it.
	marker := fmt.Sprintf("%d.5", 100000+os.Getpid())
	var mu sync.Mutex
	var ids []string
	var clients sync.WaitGroup
	for range 8 {
		clients.Go(func() {
			for {
				resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "sleep", Args: []string{marker}})
				if err != nil {
					if status.Code(err) != codes.Unavailable {
						t.Errorf("Run at shutdown: %v, want Unavailable", err)
					}
					return
				}
				mu.Lock()
				ids = append(ids, resp.GetJobId())
				mu.Unlock()
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids)
	}
	if !eventually(time.Minute, func() bool { return count() >= 8 }) {
		t.Fatalf("only %d jobs started in a minute", count())
	}
	shutdown := make(chan struct{})
	go func() {
		ts.shutdown()
		close(shutdown)
	}()
	select {
	case <-shutdown:
	case <-time.After(2 * time.Minute):
		t.Fatalf("Shutdown did not return: a job it did not stop is running\n%s", ts.log.String())
	}
	clients.Wait()
	if pids := processesWith(marker); len(pids) > 0 {
		t.Errorf("%d processes left running: %v", len(pids), pids)
	}
	if cgs := cgroupsNamed(ids); len(cgs) > 0 {
		t.Errorf("cgroups left: %v", cgs)
	}
	if log := ts.log.String(); strings.Contains(log, "shutdown: job ") {
		t.Errorf("errors at shutdown:\n%s", log)
	}
	t.Logf("%d jobs started, all stopped by the shutdown", len(ids))
}

// BenchmarkStatus: one job's Status on a reused connection.
func BenchmarkStatus(b *testing.B) {
	ts := startServer(b, testConfig())
	c := ts.client(b, "alice")
	id := run(b, c, "sleep", "1000")
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := c.Status(ctx, &tjobv1.StatusRequest{JobId: &id}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
