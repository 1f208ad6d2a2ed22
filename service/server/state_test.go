package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The server's own state: one owner of its directory, history across
// restarts, removal, retention, quotas and listing that scales.

// testState is a fresh state directory path for a test.
func testState(t testing.TB) string {
	return filepath.Join(jobVisibleDir(t), "state")
}

// stateConfig is testConfig with a state directory of the test's own.
func stateConfig(t testing.TB) Config {
	cfg := testConfig()
	cfg.StateDir = testState(t)
	return cfg
}

// startAs starts a server with cfg and a client of it as user.
func startAs(t testing.TB, cfg Config, user string) (*testServer, tjobv1.JobClient) {
	ts := startServer(t, cfg)
	return ts, ts.client(t, user)
}

// TestStateDirHasOneOwner: a second server on the same state directory is
// refused before it touches anything, naming the directory and the first
// server's pid, and the first one's jobs and output are intact.
func TestStateDirHasOneOwner(t *testing.T) {
	cfg := stateConfig(t)
	_, c := startAs(t, cfg, "alice")
	id := run(t, c, "echo", "kept")
	wait(t, c, id)

	second := cfg
	second.Log = &syncBuffer{}
	_, err := New(second)
	if !errors.Is(err, ErrStateInUse) || !strings.Contains(err.Error(), cfg.StateDir) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("a second server on %s: %v, want it refused naming the directory and pid %d", cfg.StateDir, err, os.Getpid())
	}
	if out, err := logs(ctxT(t), c, id, false); err != nil || string(out) != "kept\n" {
		t.Fatalf("the first server's job after the second tried: %q, %v", out, err)
	}
	report(t, "bad input: a second tjobs on the same state directory", "refused before it touches anything: %q; the first server's jobs and output are intact", err)
}

// TestRestartKeepsHistory: after a clean stop, a server on the same state
// directory lists the jobs, ended as they ended (a running one stopped by
// the shutdown), and gives their output as written.
func TestRestartKeepsHistory(t *testing.T) {
	cfg := stateConfig(t)
	ts, c := startAs(t, cfg, "alice")
	done := run(t, c, "sh", "-c", "seq 1 500; exit 3")
	wait(t, c, done)
	running := run(t, c, "sh", "-c", "echo started; exec sleep 1000")
	waitLogs(t, c, running, "started\n")
	ts.shutdown()

	ts2 := startServer(t, cfg)
	c2 := ts2.client(t, "alice")
	resp, err := c2.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil || len(resp.GetJobs()) != 2 {
		t.Fatalf("Status(all) after the restart: %v %v", resp.GetJobs(), err)
	}
	if st := jobStatus(t, c2, done); st.GetExit() != 3 || st.GetState() != tjobv1.State_STATE_EXITED {
		t.Errorf("the ended job after the restart: %v", st)
	}
	if st := jobStatus(t, c2, running); st.GetSignal() != 15 || !st.GetStopRequested() {
		t.Errorf("the job the shutdown stopped, after the restart: %v", st)
	}
	var want bytes.Buffer
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	if out, err := logs(ctxT(t), c2, done, true); err != nil || !bytes.Equal(out, want.Bytes()) {
		t.Errorf("the ended job's output after the restart: %d bytes, %v", len(out), err)
	}
	if out, _ := logs(ctxT(t), c2, running, false); string(out) != "started\n" {
		t.Errorf("the stopped job's output after the restart: %q", out)
	}
	report(t, "fault: tjobs stopped and started again", "both jobs listed after the restart, ended as they ended (exit 3; stopped by SIGTERM), their output byte for byte")
}

// TestDamagedRecordSkipped: a record damaged by hand, and one cut short, are
// skipped with a log line each; the others are loaded.
func TestDamagedRecordSkipped(t *testing.T) {
	cfg := stateConfig(t)
	ts, c := startAs(t, cfg, "alice")
	var ids []string
	for range 3 {
		id := run(t, c, "true")
		wait(t, c, id)
		ids = append(ids, id)
	}
	ts.shutdown()
	flip := filepath.Join(cfg.StateDir, jobsDir, ids[0]+recordExt)
	b, _ := os.ReadFile(flip)
	if i := bytes.Index(b, []byte(`"Exit":0`)); i >= 0 {
		b[i+len(`"Exit":`)] = '7' // a bit flipped on disk: still JSON
	}
	os.WriteFile(flip, b, 0o600)
	cut := filepath.Join(cfg.StateDir, jobsDir, ids[1]+recordExt)
	b, _ = os.ReadFile(cut)
	os.WriteFile(cut, b[:len(b)/2], 0o600)

	ts2 := startServer(t, cfg)
	c2 := ts2.client(t, "alice")
	resp, err := c2.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil || len(resp.GetJobs()) != 1 || resp.GetJobs()[0].GetJobId() != ids[2] {
		t.Fatalf("after the restart: %v %v, want only %s", resp.GetJobs(), err, ids[2])
	}
	log := ts2.log.String()
	for _, want := range []string{ids[0] + recordExt + ": checksum mismatch", ids[1] + recordExt + ": not a record"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
	report(t, "fault: damaged job records", "one with a flipped byte, one cut in half: both skipped and logged (%q), the third loaded", "recover: skipping a damaged record")
}

// TestRemove: a running job is refused without force; with force it is
// stopped and removed; a removed job answers NotFound, and its record,
// output and workspace are gone.
func TestRemove(t *testing.T) {
	cfg := stateConfig(t)
	_, c := startAs(t, cfg, "alice")
	id := run(t, c, "sh", "-c", "echo x > /tmp/file; exec sleep 1000")
	waitLogs(t, c, id, "")
	_, err := c.Remove(ctxT(t), &tjobv1.RemoveRequest{JobId: id})
	wantCode(t, "Remove of a running job", err, codes.FailedPrecondition)
	resp, err := c.Remove(ctxT(t), &tjobv1.RemoveRequest{JobId: id[:8], Force: true})
	if err != nil || resp.GetJobId() != id {
		t.Fatalf("Remove -f: %v %v", resp, err)
	}
	_, err = c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
	wantCode(t, "Status of a removed job", err, codes.NotFound)
	for _, f := range []string{filepath.Join(cfg.StateDir, jobsDir, id+recordExt), filepath.Join(cfg.StateDir, spoolDir, id+".out"), filepath.Join(cfg.StateDir, workDir, id)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", f, err)
		}
	}
}

// TestAutoRemove: a job run with remove is removed once it has ended and
// the client waiting for it has its status.
func TestAutoRemove(t *testing.T) {
	cfg := stateConfig(t)
	_, c := startAs(t, cfg, "alice")
	resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "sh", Args: []string{"-c", "sleep 0.3; exit 4"}, Remove: true})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJobId()
	w, err := c.Wait(ctxT(t), &tjobv1.WaitRequest{JobId: id})
	if err != nil || w.GetStatus().GetExit() != 4 {
		t.Fatalf("Wait: %v %v", w, err)
	}
	if !eventually(10*time.Second, func() bool {
		_, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
		return codes.NotFound == status.Code(err)
	}) {
		t.Fatal("the job run with remove is still there after it ended and was waited for")
	}
}

// TestRetention: the oldest ended jobs past -retain are removed, per user;
// and those older than -retain-for.
func TestRetention(t *testing.T) {
	cfg := stateConfig(t)
	cfg.Retain = 2
	ts := startServer(t, cfg)
	c, b := ts.client(t, "alice"), ts.client(t, "bob")
	var ids []string
	for range 4 {
		id := run(t, c, "true")
		wait(t, c, id)
		ids = append(ids, id)
	}
	bobs := run(t, b, "true")
	wait(t, b, bobs)
	if !eventually(5*time.Second, func() bool { return len(allJobs(t, c)) == 2 }) {
		t.Fatalf("alice keeps %d jobs, want 2", len(allJobs(t, c)))
	}
	kept := allJobs(t, c)
	if kept[0].GetJobId() != ids[3] || kept[1].GetJobId() != ids[2] {
		t.Errorf("kept %s and %s, want the newest two %s and %s", kept[0].GetJobId(), kept[1].GetJobId(), ids[3], ids[2])
	}
	if len(allJobs(t, b)) != 1 {
		t.Errorf("bob's job went with alice's retention")
	}
	// By age: everything ended is older than a minute from now.
	ts.srv.sweep(time.Now().Add(time.Minute))
	if n := len(allJobs(t, c)); n != 2 {
		t.Errorf("with no -retain-for, sweeping removed jobs: %d left", n)
	}
	ts.srv.cfg.RetainFor = 30 * time.Second
	ts.srv.sweep(time.Now().Add(time.Minute))
	if n, m := len(allJobs(t, c)), len(allJobs(t, b)); n != 0 || m != 0 {
		t.Errorf("after -retain-for 30s, a minute on: %d and %d jobs left", n, m)
	}
	report(t, "load: retention", "-retain 2: of 4 ended jobs the newest 2 kept, another user's untouched; -retain-for 30s: all removed a minute later")
}

// TestQuotas: each quota refuses with ResourceExhausted naming itself, and
// the output cap cuts a job's output without stopping it.
func TestQuotas(t *testing.T) {
	cfg := stateConfig(t)
	cfg.MaxRunning = 2
	cfg.MaxOutput = 1 << 20
	ts, c := startAs(t, cfg, "alice")

	yes := run(t, c, "yes")
	run(t, c, "sleep", "1000")
	_, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "true"})
	wantCode(t, "a third running job", err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), "-max-running is 2") {
		t.Errorf("the refusal does not name the quota: %v", err)
	}
	if !strings.Contains(ts.log.String(), "quota: user=alice refused: -max-running 2 reached") {
		t.Errorf("the refusal is not logged:\n%s", ts.log.String())
	}
	run(t, ts.client(t, "bob"), "true") // another user's quota is his own

	// yes writes as fast as it can: its output stops at the cap, and it
	// goes on running.
	if !eventually(20*time.Second, func() bool { return jobStatus(t, c, yes).GetOutputCut() }) {
		t.Fatal("the output of yes was not cut")
	}
	st := jobStatus(t, c, yes)
	spool := filepath.Join(cfg.StateDir, spoolDir, yes+".out")
	fi, _ := os.Stat(spool)
	time.Sleep(200 * time.Millisecond)
	fi2, _ := os.Stat(spool)
	if st.GetState() != tjobv1.State_STATE_RUNNING || st.GetOutputBytes() != 1<<20 || fi.Size() != 1<<20 || fi2.Size() != fi.Size() {
		t.Errorf("yes past the cap: %v; output file %d then %d bytes", st, fi.Size(), fi2.Size())
	}
	stream, err := c.Logs(ctxT(t), &tjobv1.LogsRequest{JobId: yes})
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	var cutAt int64
	for {
		m, err := stream.Recv()
		if err != nil {
			break
		}
		got += int64(len(m.GetData()))
		cutAt = max(cutAt, m.GetCutAt())
	}
	if got != 1<<20 || cutAt != 1<<20 {
		t.Errorf("Logs of the cut job: %d bytes, cut_at %d", got, cutAt)
	}

	// The disk quota: full once this much is kept; the user's oldest ended
	// jobs are reclaimed first, then Run is refused.
	c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: yes})
	var used int64
	eventually(10*time.Second, func() bool { // its record, with what it keeps
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		used = ts.srv.disk
		return used >= 1<<20
	})
	ts.srv.cfg.MaxDisk = used / 2 // what yes kept alone passes it
	_, err = c.Run(ctxT(t), &tjobv1.RunRequest{Path: "true"})
	if err != nil {
		t.Fatalf("Run with the disk full of the user's ended jobs: %v, want room made", err)
	}
	if _, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &yes}); status.Code(err) != codes.NotFound {
		t.Errorf("the user's oldest ended job was not reclaimed: %v", err)
	}
	ts.srv.cfg.MaxDisk = 1 // nothing fits
	ts.srv.mu.Lock()
	ts.srv.disk = 2 // another user's output, say
	ts.srv.mu.Unlock()
	_, err = ts.client(t, "carol").Run(ctxT(t), &tjobv1.RunRequest{Path: "true"})
	wantCode(t, "Run with the disk quota full", err, codes.ResourceExhausted)
	if !strings.Contains(err.Error(), "-max-disk") {
		t.Errorf("the refusal does not name the quota: %v", err)
	}
	report(t, "bad input: quotas", "-max-running 2: the third Run refused (%q); -max-output 1m: yes cut at %d bytes, still running, Logs cut_at %d; -max-disk: the user's oldest ended job reclaimed, then Run refused (%q)",
		"running-jobs quota reached", st.GetOutputBytes(), cutAt, "disk quota full")
}

// TestStatusPages: Status(all) of 20,000 jobs with 1 KiB command lines
// comes in pages, none near a client's 4 MiB limit, newest first, each job
// once; and the server keeps them in little memory.
func TestStatusPages(t *testing.T) {
	n := 20_000
	if scaledDown() {
		n = 2_000
	}
	cfg := stateConfig(t)
	state, err := openState(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	arg := strings.Repeat("x", 1000)
	start := time.Now().Add(-time.Hour)
	want := make([]string, n)
	for i := range n {
		rec := &record{ID: uuid.NewString(), Owner: "alice", Created: start.Add(time.Duration(i) * time.Millisecond),
			Args: []string{"echo", arg}, State: stateExited, Started: start.UnixNano(), Stopped: start.UnixNano() + 1}
		writeRecordFast(t, state, rec)
		want[n-1-i] = rec.ID // newest first
	}
	state.close()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	loading := time.Now()
	ts := startServer(t, cfg)
	t.Logf("the server loaded %d records in %v", n, time.Since(loading))
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	c := ts.client(t, "alice")

	var got []string
	pages, biggest := 0, 0
	tok := ""
	for {
		resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true, PageToken: tok})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		biggest = max(biggest, proto.Size(resp))
		for _, j := range resp.GetJobs() {
			got = append(got, j.GetJobId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(got) != n || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%d jobs in %d pages, want %d, newest first, each once", len(got), pages, n)
	}
	if biggest > 2<<20 {
		t.Errorf("the biggest page is %d bytes", biggest)
	}
	perJob := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(n)
	report(t, fmt.Sprintf("load: Status of %d jobs with 1 KiB command lines", n),
		"%d pages, the biggest %d KiB (a client takes 4 MiB); all %d jobs once, newest first; %d bytes of heap per job kept", pages, biggest>>10, n, perJob)
}

// writeRecordFast writes a record as save does, without syncing: for tests
// that make many.
func writeRecordFast(t testing.TB, d *stateDir, rec *record) {
	t.Helper()
	body, _ := json.Marshal(rec)
	b, _ := json.Marshal(envelope{CRC: crc32.Checksum(body, castagnoli), Record: body})
	if err := os.WriteFile(d.recordFile(rec.ID), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// allJobs is a user's every job, newest first.
func allJobs(t testing.TB, c tjobv1.JobClient) []*tjobv1.Status {
	t.Helper()
	resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetJobs()
}

// TestAutoRemoveRace: a job run with remove that ends before its client's
// Wait or Logs comes is still there for them, then removed; one nobody
// claims is removed after unclaimedFor. Remove right after Wait needs no
// force: Wait returns with the record final.
func TestAutoRemoveRace(t *testing.T) {
	defer func(d time.Duration) { unclaimedFor = d }(unclaimedFor)
	unclaimedFor = 2 * time.Second
	cfg := stateConfig(t)
	_, c := startAs(t, cfg, "alice")
	runEnded := func(remove bool) string {
		t.Helper()
		resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "sh", Args: []string{"-c", "echo out; exit 3"}, Remove: remove})
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetJobId()
		if !eventually(10*time.Second, func() bool {
			st, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
			return err == nil && st.GetJobs()[0].GetState() == tjobv1.State_STATE_EXITED
		}) {
			t.Fatalf("job %s did not end", id)
		}
		return id
	}
	gone := func(id string) bool {
		_, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
		return status.Code(err) == codes.NotFound
	}

	id := runEnded(true)
	waitLogs(t, c, id, "out\n")
	w, err := c.Wait(ctxT(t), &tjobv1.WaitRequest{JobId: id})
	if err != nil || w.GetStatus().GetExit() != 3 {
		t.Fatalf("Wait of an ended job run with remove: %v %v", w, err)
	}
	if !eventually(10*time.Second, func() bool { return gone(id) }) {
		t.Error("the job run with remove is still there after its Logs and Wait")
	}

	idle := runEnded(true)
	start := time.Now()
	if !eventually(time.Minute, func() bool { return gone(idle) }) {
		t.Fatal("a job run with remove that nobody waited for was never removed")
	}
	if waited := time.Since(start); waited < unclaimedFor/4 { // not at once
		t.Errorf("a job run with remove that nobody waited for was removed %v after it ended, want about %v", waited, unclaimedFor)
	}

	for i := 0; i < 5; i++ {
		resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "true"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Wait(ctxT(t), &tjobv1.WaitRequest{JobId: resp.GetJobId()}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Remove(ctxT(t), &tjobv1.RemoveRequest{JobId: resp.GetJobId()}); err != nil {
			t.Fatalf("Remove right after Wait: %v", err)
		}
	}
}

// TestStopGraceZero: a Stop with a zero grace period kills the job at once,
// with no SIGTERM, though its own grace is an hour.
func TestStopGraceZero(t *testing.T) {
	cfg := stateConfig(t)
	_, c := startAs(t, cfg, "alice")
	resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "sh", Args: []string{"-c", "trap 'echo TERM' TERM; echo up; while :; do sleep 0.1; done"},
		GracePeriod: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJobId()
	waitLogs(t, c, id, "up\n")
	st, err := c.Stop(ctxT(t), &tjobv1.StopRequest{JobId: id, GracePeriod: durationpb.New(0)})
	if err != nil || st.GetStatus().GetSignal() != 9 {
		t.Fatalf("Stop with grace 0: %v %v", st, err)
	}
	if out, err := logs(ctxT(t), c, id, false); err != nil || string(out) != "up\n" {
		t.Errorf("output %q (%v): the job had a SIGTERM", out, err)
	}
}

// TestStateDirHidden: a job sees nothing of the state directory, where the
// other jobs' records, outputs and workspaces are, whatever its user.
func TestStateDirHidden(t *testing.T) {
	cfg := stateConfig(t)
	cfg.UserNS = tjob.IDMap{} // root, whom no file mode stops
	_, c := startAs(t, cfg, "alice")
	other := run(t, c, "sh", "-c", "echo secret > /tmp/mine; sleep 1000")
	waitLogs(t, c, other, "")
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, workDir), filepath.Join(cfg.StateDir, jobsDir)} {
		id := run(t, c, "sh", "-c", "ls -A "+d+"; cat "+filepath.Join(cfg.StateDir, workDir, other, "mine")+" 2>&1; echo x > /tmp/f && cat /tmp/f")
		w, err := c.Wait(ctxT(t), &tjobv1.WaitRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := logs(ctxT(t), c, id, false)
		listed := regexp.MustCompile(`(?m)^(jobs|work|spool|lock|` + other + `(\.json)?)$`).Find(out)
		if strings.Contains(string(out), "secret") || listed != nil || !strings.HasSuffix(string(out), "\nx\n") {
			t.Errorf("a job looking into %s: exit %d, output %q", d, w.GetStatus().GetExit(), out)
		}
	}
}

// TestStartQueue: Runs wait for a start slot in turn, and a client that
// stops waiting leaves the queue with nothing made for it: no job, no
// record, no workspace, nothing counted against its quota.
func TestStartQueue(t *testing.T) {
	cfg := stateConfig(t)
	ts, c := startAs(t, cfg, "alice")
	slots := cap(ts.srv.startSlots)
	for range slots { // every start slot taken
		ts.srv.startSlots <- struct{}{}
	}
	freed := 0
	defer func() {
		for ; freed < slots; freed++ {
			<-ts.srv.startSlots
		}
	}()

	// The connection first, so that the deadline is spent in the queue.
	if _, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Run(ctx, &tjobv1.RunRequest{Path: "true"})
	wantCode(t, "a Run that waited for a start slot past its deadline", err, codes.DeadlineExceeded)
	runningJobs := func() int {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return ts.srv.running["alice"]
	}
	// Its handler leaves the queue when the server sees the deadline too.
	if !eventually(time.Minute, func() bool { return runningJobs() == 0 }) {
		t.Fatalf("the Run that gave up is still counted against the quota: %d running", runningJobs())
	}
	queued := make(chan error, 1)
	var id string
	// The queued Run waits as long as the test takes to look.
	queuedCtx, cancelQueued := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancelQueued()
	go func() {
		resp, err := c.Run(queuedCtx, &tjobv1.RunRequest{Path: "true"})
		id = resp.GetJobId()
		queued <- err
	}()
	// The second Run is queued (the server counts it as running) and has
	// made nothing yet; the first has left nothing behind.
	if !eventually(time.Minute, func() bool { return runningJobs() == 1 }) {
		t.Fatal("the second Run never reached the queue")
	}
	for _, d := range []string{jobsDir, workDir} {
		if names := dirEntries(filepath.Join(cfg.StateDir, d)); len(names) != 0 {
			t.Fatalf("with every start slot taken, the state directory's %s holds %q", d, names)
		}
	}
	if jobs := jobSet(t, c); len(jobs) != 0 {
		t.Fatalf("Status(all) while queued: %q; want no job", jobs)
	}

	<-ts.srv.startSlots // one slot free: the queued Run starts its job
	freed++
	if err := <-queued; err != nil {
		t.Fatalf("the queued Run, once a slot was free: %v", err)
	}
	if st := wait(t, c, id); st.GetExit() != 0 {
		t.Errorf("the queued job: %v", st)
	}
	report(t, "load: a full start queue", "with all %d start slots taken, a Run with a 300 ms deadline got DeadlineExceeded and left no job, record or workspace; a queued Run started its job once a slot was free", slots)
}
