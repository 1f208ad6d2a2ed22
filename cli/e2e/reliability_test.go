package e2e

// The reliability and security suite end to end: the real tjobs
// and tjob binaries, clients that misbehave, a server killed with SIGKILL,
// many clients at once, and attacks from certificates and from inside a
// job. Every case logs one line,
//
//	RELIABILITY: <case>: <result with figures>
//
// which hack/reliability-doc.sh collects into docs/RELIABILITY.md.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neildo/tjob/internal/testkit"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Shared with the server's tests: see internal/testkit.
var (
	jobVisibleDir = testkit.JobVisible
	eventually    = testkit.Eventually
	processesWith = testkit.ProcessesWith
	cgroupsNamed  = testkit.CgroupsNamed
	report        = testkit.Report
	scaledDown    = testkit.ScaledDown
	soak          = testkit.Soak
)

// startTjobs starts tjobs in dir, whose .tjob holds the certificates, on a
// free loopback port, with the e2e defaults and then args.
func startTjobs(t *testing.T, dir string, args ...string) *env {
	t.Helper()
	e := &env{dir: dir, log: &syncBuffer{}, done: make(chan struct{})}
	all := []string{"-addr", "127.0.0.1:0", "-grace", "2s"}
	if dev := testBlockDevice(t); dev != "" {
		all = append(all, "-io-devices", dev)
	}
	e.srv = exec.Command(filepath.Join(binDir, "tjobs"), append(all, args...)...)
	e.srv.Dir = dir
	stderr, err := e.srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		defer close(e.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(e.log, line)
			if _, rest, ok := strings.Cut(line, "listening on "); ok {
				listening <- strings.Fields(rest)[0]
			}
		}
		io.Copy(io.Discard, stderr)
		e.srv.Wait()
	}()
	t.Cleanup(func() {
		e.stop(t)
		if t.Failed() {
			t.Logf("tjobs log:\n%s", e.log.String())
			e.failuresMu.Lock()
			defer e.failuresMu.Unlock()
			for _, f := range e.failures {
				t.Log("(again) " + f)
			}
		}
	})
	select {
	case e.addr = <-listening:
	case <-e.done:
		t.Fatalf("tjobs exited:\n%s", e.log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("tjobs did not start:\n%s", e.log.String())
	}
	return e
}

// newEnvWith is newEnv with more tjobs flags, in a directory jobs can see
// (so that only the masks hide its certificates and spool from them).
func newEnvWith(t *testing.T, args ...string) *env {
	t.Helper()
	requireRoot(t)
	dir := jobVisibleDir(t)
	certs := exec.Command(filepath.Join(binDir, "tjobs"), "certs", "bob")
	certs.Dir = dir
	if out, err := certs.CombinedOutput(); err != nil {
		t.Fatalf("tjobs certs: %v\n%s", err, out)
	}
	return startTjobs(t, dir, args...)
}

// addUsers makes client certificates for users in the env's .tjob.
func (e *env) addUsers(t *testing.T, users ...string) {
	t.Helper()
	certs := exec.Command(filepath.Join(binDir, "tjobs"), append([]string{"certs"}, users...)...)
	certs.Dir = e.dir
	if out, err := certs.CombinedOutput(); err != nil {
		t.Fatalf("tjobs certs: %v\n%s", err, out)
	}
}

// tlsFor is what a well-behaved client of the env uses as user.
func (e *env) tlsFor(t testing.TB, user string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(e.dir, ".tjob", user+".crt"), filepath.Join(e.dir, ".tjob", user+".key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(e.dir, ".tjob", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{pair}}
}

// client is a Job client for user on a connection of its own.
func (e *env) client(t testing.TB, user string, opts ...grpc.DialOption) tjobv1.JobClient {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(e.tlsFor(t, user)))}, opts...)
	conn, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return tjobv1.NewJobClient(conn)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// readLogs reads a job's output to its end.
func readLogs(ctx context.Context, c tjobv1.JobClient, id string, follow bool) ([]byte, error) {
	stream, err := c.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: follow})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, msg.GetData()...)
	}
}

func runJob(t testing.TB, c tjobv1.JobClient, path string, args ...string) string {
	t.Helper()
	resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: path, Args: args})
	if err != nil {
		t.Fatalf("Run %s: %v", path, err)
	}
	if st := resp.GetStatus(); st.GetState() == tjobv1.State_STATE_FAILED {
		t.Fatalf("Run %s: %s", path, st.GetError())
	}
	return resp.GetJobId()
}

// procFDs is how many files process pid has open.
func procFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// procStatus reads a number (kB or a count) from /proc/<pid>/status.
func procStatus(pid int, field string) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}

// TestReliabilityServerKilled: tjobs killed with SIGKILL leaves no job
// process behind, and a tjobs started again in its place removes the
// cgroups the dead one left, and says so, and keeps its history: the jobs
// are listed, ended, the ones that ran said to have been cut short by the
// server's end, and their output reads as it was written.
func TestReliabilityServerKilled(t *testing.T) {
	e := newEnv(t)
	const m1, m2, m3 = "31411.5", "31412.5", "31413.5"
	ids := []string{
		e.runJob(t, "sh", "-c", "seq 1 1000; exec sleep "+m1),
		e.runJob(t, "sh", "-c", "setsid sleep "+m2+" & trap '' TERM; sleep "+m3),
		e.runJob(t, "echo", "done"),
	}
	e.waitJob(t, ids[2])
	if !eventually(10*time.Second, func() bool {
		return len(processesWith(m1)) > 0 && len(processesWith(m2)) > 0 && len(processesWith(m3)) > 0
	}) {
		t.Fatal("the jobs' processes are not where the test looks")
	}
	cgs := cgroupsNamed(ids[:2])
	if len(cgs) == 0 {
		t.Fatal("the jobs' cgroups are not where the test looks")
	}
	var seq bytes.Buffer
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&seq, "%d\n", i)
	}
	if !eventually(10*time.Second, func() bool { return e.ok(t, "logs", ids[0]) == seq.String() }) {
		t.Fatal("the first job's output is not there yet")
	}

	e.srv.Process.Kill()
	<-e.done
	for _, m := range []string{m1, m2, m3} {
		if !eventually(20*time.Second, func() bool { return len(processesWith(m)) == 0 }) {
			t.Fatalf("a job's process outlived tjobs: sleep %s: %v", m, processesWith(m))
		}
	}
	// What the dead server left: its jobs' cgroups (empty once each jail's
	// init, which saw its lifeline close, has finished exiting).
	var procs []string
	eventually(20*time.Second, func() bool {
		procs = nil
		for _, d := range cgs {
			if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
				procs = append(procs, d+": "+strings.Join(strings.Fields(string(b)), " "))
			}
		}
		return len(procs) == 0
	})
	if len(procs) > 0 {
		t.Fatalf("processes left in the jobs' cgroups: %q", procs)
	}
	left := cgroupsNamed(ids[:2])
	if len(left) == 0 {
		t.Fatal("the dead server's cgroups were removed before the new one started (by another tjob process on this host?)")
	}

	e2 := startTjobs(t, e.dir)
	log := e2.log.String()
	if gone := cgroupsNamed(ids); len(gone) > 0 {
		t.Fatalf("stale cgroups left after the restart: %q", gone)
	}
	for _, d := range left {
		if !strings.Contains(log, d) {
			t.Errorf("the log does not name the removed cgroup %s:\n%s", d, log)
		}
	}
	// The history: every job, ended; the output as written.
	rows := psRows(t, e2.ok(t, "ps", "-a"))
	for _, id := range ids {
		if !strings.Contains(rows[id[:8]], "Exited") {
			t.Errorf("after the restart, job %s: %q", id[:8], rows[id[:8]])
		}
	}
	if out := e2.ok(t, "logs", ids[0]); out != seq.String() {
		t.Errorf("the cut-short job's output after the restart: %d bytes, want %d", len(out), seq.Len())
	}
	if out := e2.ok(t, "logs", ids[2]); out != "done\n" {
		t.Errorf("the ended job's output after the restart: %q", out)
	}
	st := e2.inspect(t, ids[0])
	if !strings.Contains(st.GetError(), "tjobs stopped while the job ran") {
		t.Errorf("the cut-short job's error: %q", st.GetError())
	}
	// The new server works.
	id := e2.runJob(t, "echo", "after")
	if out := e2.waitJob(t, id); string(out) != "after\n" {
		t.Fatalf("after the restart: %q", out)
	}
	report(t, "fault: server killed with SIGKILL and started again",
		"no job process survived (3 sleeps, one setsid, one ignoring SIGTERM); the new server removed %d stale cgroup dirs at start and logged it; ps -a lists the 3 jobs ended, logs give their output as written (%d bytes), and the cut-short ones say %q",
		len(left), seq.Len(), st.GetError())
}

// TestReliabilityOutOfMemoryShown: a job over the server's memory limit (the
// default 20 MiB) is killed, and `tjob ps -a` says it ran out of memory.
func TestReliabilityOutOfMemoryShown(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	e.waitJob(t, id)
	row := psRows(t, e.ok(t, "ps", "-a"))[id[:8]]
	if !strings.Contains(row, "Exited (137)") || !strings.HasSuffix(row, "(out of memory)") {
		t.Fatalf("ps -a: %q", row)
	}
	report(t, "fault: job exceeds the server's memory limit, seen with the CLI", "tjob ps -a: %q", strings.Join(strings.Fields(row), " "))
}

// stallingConn is a client connection that stops reading its socket after
// the first limit bytes (the TLS handshake and a little more): a client
// that never reads.
type stallingConn struct {
	net.Conn
	left   atomic.Int64
	closed chan struct{}
	once   sync.Once
}

func (c *stallingConn) Read(p []byte) (int, error) {
	left := c.left.Load()
	if left <= 0 {
		<-c.closed
		return 0, net.ErrClosed
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.left.Add(-int64(n))
	return n, err
}

func (c *stallingConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func stallingDialer(limit int64) grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := &stallingConn{Conn: nc, closed: make(chan struct{})}
		c.left.Store(limit)
		return c, nil
	})
}

// TestReliabilityStalledReaders: clients open Logs streams of a job with a
// lot of output and never read them: some never read the stream (HTTP/2 flow
// control stops the server), some never read their socket at all (TCP
// stops it). The server's memory does not grow with the output it cannot
// send, other clients are served meanwhile, byte-exact, and when the
// stalled clients go, the server's open files are back where they were.
func TestReliabilityStalledReaders(t *testing.T) {
	e := newEnv(t)
	size, perKind := 64<<20, 50
	switch {
	case soak():
		perKind = 250
	case scaledDown():
		size, perKind = 8<<20, 10
	}
	c := e.client(t, "cli")
	id := runJob(t, c, "sh", "-c", fmt.Sprintf("head -c %d /dev/zero; exec sleep 1000", size))
	pid := e.srv.Process.Pid
	if _, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id}); err != nil {
		t.Fatal(err)
	}
	rss0, fd0 := procStatus(pid, "VmRSS"), procFDs(pid)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	dial := func(opts ...grpc.DialOption) tjobv1.JobClient {
		opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(e.tlsFor(t, "cli")))}, opts...)
		cc, err := grpc.NewClient(e.addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cc)
		return tjobv1.NewJobClient(cc)
	}
	streams := 0
	for k := range 10 {
		// Half never read their streams, on connections whose windows stay
		// at 64 KiB; half never read their sockets.
		var sc tjobv1.JobClient
		if k%2 == 0 {
			sc = dial(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		} else {
			sc = dial(stallingDialer(32 << 10))
		}
		for range perKind / 5 {
			if _, err := sc.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true}); err != nil {
				t.Fatal(err)
			}
			streams++
		}
	}
	// Meanwhile a client that reads follows the same job to all its output,
	// and runs a job of its own.
	good := dial()
	stream, err := good.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < size {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("the reading follower after %d bytes: %v", got, err)
		}
		if len(bytes.Trim(msg.GetData(), "\x00")) != 0 {
			t.Fatal("the reading follower got a byte that is not the job's")
		}
		got += len(msg.GetData())
	}
	other := runJob(t, good, "echo", "served")
	if out, err := readLogs(ctxT(t), good, other, true); err != nil || string(out) != "served\n" {
		t.Fatalf("another job during the stall: %q, %v", out, err)
	}
	// The stalled streams have had all the time they need to fill what the
	// server buffers for them: the reading follower read all 64 MiB.
	rss, fds, thr := 0, 0, 0
	for range 10 {
		rss, fds, thr = max(rss, procStatus(pid, "VmRSS")), max(fds, procFDs(pid)), max(thr, procStatus(pid, "Threads"))
		time.Sleep(100 * time.Millisecond)
	}
	growth := rss - rss0
	// KiB: what a stream may hold (its buffers, a message or two in flight)
	// is far below what one stream's unsent output would take.
	limit := streams<<10 + 32<<10
	if growth > limit {
		t.Fatalf("server RSS grew by %d MiB with %d stalled streams of %d MiB each", growth>>10, streams, size>>20)
	}
	cancel()
	for _, cc := range conns {
		cc.Close()
	}
	conns = nil
	var fd1 int
	if !eventually(20*time.Second, func() bool { fd1 = procFDs(pid); return fd1 <= fd0 }) {
		t.Fatalf("server open files: %d before, %d after the stalled clients left", fd0, fd1)
	}
	report(t, fmt.Sprintf("bad input: %d Logs streams never read (%d never read their stream, %d never read their socket)", streams, streams/2, streams/2),
		"job output %d MiB; server RSS %d MiB before, %d MiB with the stalled streams (+%d MiB, %d KiB a stream, where keeping the output for them would take %d MiB); open files %d before, %d during, %d after; threads %d; another client meanwhile followed all %d MiB and ran a job",
		size>>20, rss0>>10, rss>>10, growth>>10, growth/streams, streams*size>>20, fd0, fds, fd1, thr, got>>20)
}

// dialUser connects as user; the caller closes the connection. Its calls
// wait for the connection to be ready, up to their deadline: on a machine
// this loaded a TLS handshake can outlast the server's 10 s bound, and a
// client that is refused so tries again, as the test means it to.
func (e *env) dialUser(t testing.TB, user string) (*grpc.ClientConn, tjobv1.JobClient) {
	t.Helper()
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(e.tlsFor(t, user))),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatal(err)
	}
	return cc, tjobv1.NewJobClient(cc)
}

// TestReliabilityLoad: many clients, each with a user of its own, run,
// follow (twice) and stop jobs all at once. Every follower of every job
// gets every byte of its output, each user's Status(all) lists all its
// jobs and no one else's, and once the clients have gone the server has
// no more open files than before. The soak repeats it on the same server.
func TestReliabilityLoad(t *testing.T) {
	e := newEnv(t)
	clients, perClient, rounds := 50, 20, 1
	switch {
	case soak():
		rounds = 5
	case scaledDown():
		clients, perClient = 8, 2
	}
	users := make([]string, clients)
	for i := range users {
		users[i] = fmt.Sprintf("load%02d", i)
	}
	e.addUsers(t, users...)
	// What each job writes, known to the test: 3,000 numbered lines, then
	// its own hostname (the first 8 characters of its ID).
	var seq bytes.Buffer
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&seq, "%d\n", i)
	}
	data := seq.Bytes()
	script := "seq 1 3000; cat /proc/sys/kernel/hostname; exec sleep 1000"
	pid := e.srv.Process.Pid
	fd0, rss0 := procFDs(pid), procStatus(pid, "VmRSS")

	// The server's peak memory, sampled while the clients work.
	var peakRSS atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := int64(procStatus(pid, "VmRSS")); v > peakRSS.Load() {
				peakRSS.Store(v)
			}
			select {
			case <-sampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer func() { close(sampling); <-sampled }()

	ids := make([][]string, clients)
	for round := range rounds {
		start := time.Now()
		var bytesRead, followers atomic.Int64
		var runTimes, jobTimes durations
		// The round's calls have no deadline of their own: its 1,000
		// Runs share two CPUs, and on a busy machine the last returns
		// minutes after the first. The round fails when nothing moves.
		ctx, watch := e.watchStall(t, fmt.Sprintf("load round %d", round+1), loadStall)
		// Once the watch has failed the round, its calls fail as
		// cancelled: the watch has said why.
		fail := func(format string, args ...any) {
			if ctx.Err() == nil {
				e.failf(t, format, args...)
			}
		}
		var wg sync.WaitGroup
		for u, user := range users {
			wg.Go(func() {
				cc1, c1 := e.dialUser(t, user)
				defer cc1.Close()
				cc2, c2 := e.dialUser(t, user)
				defer cc2.Close()
				var mu sync.Mutex
				var jobs sync.WaitGroup
				for range perClient {
					jobs.Go(func() {
						runAt := time.Now()
						resp, err := c1.Run(ctx, &tjobv1.RunRequest{Path: "sh", Args: []string{"-c", script}})
						runTimes.add(time.Since(runAt))
						watch.moved()
						if err != nil || resp.GetStatus().GetState() == tjobv1.State_STATE_FAILED {
							fail("%s: Run: %v %v", user, err, resp.GetStatus())
							return
						}
						id := resp.GetJobId()
						mu.Lock()
						ids[u] = append(ids[u], id)
						mu.Unlock()
						want := append(slices.Clip(data), id[:8]+"\n"...)
						follow := func(c tjobv1.JobClient, which string, stop bool) {
							stream, err := c.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true})
							if err != nil {
								fail("%s: Logs: %v", user, err)
								return
							}
							var got []byte
							for {
								msg, err := stream.Recv()
								if errors.Is(err, io.EOF) {
									break
								}
								if err != nil {
									fail("%s: job %s: %s follower: %v", user, id, which, err)
									return
								}
								got = append(got, msg.GetData()...)
								if stop && len(got) >= len(want) {
									stop = false
									if _, err := c.Stop(ctx, &tjobv1.StopRequest{JobId: id}); err != nil {
										fail("%s: Stop: %v", user, err)
									}
								}
								if !stop {
									time.Sleep(time.Millisecond)
								}
							}
							if !bytes.Equal(got, want) {
								fail("%s: job %s: %s follower got %d bytes, want %d", user, id, which, len(got), len(want))
							}
							bytesRead.Add(int64(len(got)))
							followers.Add(1)
							watch.moved()
						}
						var f sync.WaitGroup
						// The first follower stops the job once it has seen
						// all its output and reads on to the end; the second
						// reads slowly on the user's other connection.
						f.Go(func() { follow(c1, "first", true) })
						f.Go(func() { follow(c2, "slow", false) })
						f.Wait()
						jobTimes.add(time.Since(runAt))
					})
				}
				jobs.Wait()
			})
		}
		wg.Wait()
		watch.end()
		took := time.Since(start)
		if t.Failed() {
			return
		}
		total := 0
		for u, user := range users {
			cc, c := e.dialUser(t, user)
			resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
			if err != nil {
				cc.Close()
				e.failf(t, "%s: Status(all): %v", user, err)
				return
			}
			var listed []string
			for _, st := range resp.GetJobs() {
				listed = append(listed, st.GetJobId())
				if st.GetOwner() != user || st.GetState() != tjobv1.State_STATE_EXITED || !st.GetStopRequested() || st.GetExit() != 143 {
					e.failf(t, "%s: %v", user, st)
				}
			}
			slices.Sort(listed)
			slices.Sort(ids[u])
			if !slices.Equal(listed, ids[u]) {
				e.failf(t, "%s: Status(all) lists %q, want %q", user, listed, ids[u])
			}
			running, err := c.Status(ctxT(t), &tjobv1.StatusRequest{})
			if err != nil || len(running.GetJobs()) != 0 {
				e.failf(t, "%s: running jobs after all stopped: %v, %v", user, running.GetJobs(), err)
			}
			cc.Close()
			total += len(listed)
		}
		var fd1 int
		if !eventually(20*time.Second, func() bool { fd1 = procFDs(pid); return fd1 <= fd0 }) {
			e.failf(t, "server open files: %d before, %d after the clients left", fd0, fd1)
			return
		}
		name := fmt.Sprintf("load: %d clients each running, following (twice) and stopping %d jobs at once", clients, perClient)
		if rounds > 1 {
			name += fmt.Sprintf(" (soak round %d of %d)", round+1, rounds)
		}
		report(t, name,
			"%d jobs in %.1fs (Runs took %.1fs at the median, %.1fs at most; from Run to its followers' end a job took %.1fs at most); all %d followers got every byte (%d KiB in all); every user's Status(all) listed exactly its %d jobs, all stopped (exit 143); server open files %d before, %d after; RSS %d MiB before, peak %d MiB, %d MiB after",
			clients*perClient, took.Seconds(), runTimes.quantile(0.5).Seconds(), runTimes.quantile(1).Seconds(), jobTimes.quantile(1).Seconds(), followers.Load(), bytesRead.Load()>>10, total/clients, fd0, fd1, rss0>>10, peakRSS.Load()>>10, procStatus(pid, "VmRSS")>>10)
	}
}

// loadStall is how long the load test lets nothing move before it fails.
const loadStall = 2 * time.Minute

// stallWatch fails a test whose work has stopped moving, where a deadline
// would fail one that is only slow: the test calls moved as its calls
// return, and the watch counts the server's children (each job's init)
// too, which change as jobs start and end.
type stallWatch struct {
	last   atomic.Int64 // when something last moved, in Unix ns
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
}

// watchStall starts a watch; its context is cancelled when the watch
// fails the test, which ends the calls made with it.
func (e *env) watchStall(t *testing.T, what string, stall time.Duration) (context.Context, *stallWatch) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &stallWatch{cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	w.moved()
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		kids := -1
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			if n := len(testkit.Children(e.srv.Process.Pid)); n != kids {
				kids = n
				w.moved()
			}
			if idle := time.Since(time.Unix(0, w.last.Load())); idle > stall {
				e.failf(t, "%s: nothing moved for %v: no call returned, and tjobs kept %d child processes (job inits)", what, idle.Round(time.Second), kids)
				cancel()
				return
			}
		}
	}()
	return ctx, w
}

// moved says the work made progress.
func (w *stallWatch) moved() { w.last.Store(time.Now().UnixNano()) }

// end stops the watch and cancels its context.
func (w *stallWatch) end() {
	close(w.stop)
	<-w.done
	w.cancel()
}

// durations are how long calls took, from many goroutines.
type durations struct {
	mu sync.Mutex
	ds []time.Duration
}

func (d *durations) add(v time.Duration) {
	d.mu.Lock()
	d.ds = append(d.ds, v)
	d.mu.Unlock()
}

// quantile is the q-quantile (0 to 1) of the durations; 0 when none.
func (d *durations) quantile(q float64) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ds) == 0 {
		return 0
	}
	slices.Sort(d.ds)
	return d.ds[int(q*float64(len(d.ds)-1))]
}

// execTjobs is tjobs with args, in dir.
func execTjobs(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "tjobs"), args...)
	cmd.Dir = dir
	return cmd
}

// TestReliabilityManySleepers: thousands of jobs that sleep cost tjobs a
// bounded number of OS threads, because it waits for each through a pidfd
// in Go's poller, not with a thread blocked in wait(2). The soak runs
// 3,000; make test 300 (60 in the VM).
func TestReliabilityManySleepers(t *testing.T) {
	n := 300
	switch {
	case soak():
		n = 3000
	case scaledDown():
		n = 60
	}
	const maxThreads = 64
	e := newEnvWith(t, "-max-running", "0")
	pid := e.srv.Process.Pid
	threads0 := procStatus(pid, "Threads")
	c := e.client(t, "cli")
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && !t.Failed(); i = int(next.Add(1)) - 1 {
				resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "sleep", Args: []string{"1000"}})
				if err != nil || resp.GetStatus().GetState() != tjobv1.State_STATE_RUNNING {
					t.Errorf("Run %d: %v %v", i, err, resp.GetStatus())
					return
				}
				ids[i] = resp.GetJobId()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if t.Failed() {
		return
	}
	threads := procStatus(pid, "Threads")
	// A job's tasks: the init's threads and the sleep.
	tasks := 0
	for _, d := range testkit.CgroupsNamed(ids[:1]) {
		for _, f := range []string{"cgroup.threads", "tasks"} {
			if b, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				tasks = max(tasks, len(strings.Fields(string(b))))
			}
		}
	}
	// Status pages at most 1,000 jobs a reply; count every page.
	running, pages := 0, 0
	for tok := ""; ; pages++ {
		resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{PageToken: tok})
		if err != nil {
			t.Fatalf("Status page %d: %v", pages, err)
		}
		running += len(resp.GetJobs())
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if running != n {
		t.Fatalf("Status: %d running jobs in %d pages; want %d", running, pages+1, n)
	}
	if threads > maxThreads {
		t.Errorf("tjobs has %d OS threads with %d jobs running, want at most %d", threads, n, maxThreads)
	}
	// Shutdown stops every job, and each end costs CPU (the init's exit,
	// the cgroups' removal, the record's save): about 14 ms a job on an
	// idle 2-CPU machine, several times that on a busy one. stop fails
	// only when the jobs stop ending.
	shutdown := e.stop(t)
	if left := testkit.CgroupsNamed(ids); len(left) > 0 {
		t.Errorf("after shutdown %d job cgroups are left, such as %s", len(left), left[0])
	}
	_, said, _ := strings.Cut(e.log.String(), "shutdown: "+strconv.Itoa(n)+" jobs ended in ")
	said, _, _ = strings.Cut(said, "\n")
	report(t, fmt.Sprintf("load: %d sleep jobs at once", n),
		"all ran (started in %.1fs, 16 Run calls in flight); tjobs had %d OS threads before and %d with them running (bound %d); each job is %d tasks: the init's threads and the command; SIGTERM to tjobs stopped them all and it exited in %.1fs (the jobs ended in %s)",
		took.Seconds(), threads0, threads, maxThreads, tasks, shutdown.Seconds(), said)
}

// inspect is one of cli's jobs' status, from the server.
func (e *env) inspect(t *testing.T, id string) *tjobv1.Status {
	t.Helper()
	resp, err := e.client(t, "cli").Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
	if err != nil || len(resp.GetJobs()) != 1 {
		t.Fatalf("Status %s: %v", id, err)
	}
	return resp.GetJobs()[0]
}
