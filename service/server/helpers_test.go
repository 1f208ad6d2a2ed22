package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/neildo/tjob/internal/testkit"

	"github.com/neildo/tjob/service/pki"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Shared with the CLI's end-to-end tests: see internal/testkit.
var (
	jobVisibleDir = testkit.JobVisible
	eventually    = testkit.Eventually
	processesWith = testkit.ProcessesWith
	cgroupsNamed  = testkit.CgroupsNamed
	report        = testkit.Report
	scaledDown    = testkit.ScaledDown
	soak          = testkit.Soak
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: tjobs runs jobs in namespaces and cgroups of their own")
	}
}

// fixture is a CA and certificates signed by it, written to dir.
type fixture struct {
	dir string
	ca  *pki.CA

	mu    sync.Mutex
	users map[string]tls.Certificate
}

var (
	fixtureOnce sync.Once
	sharedCA    *pki.CA
	fixtureErr  error
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	fixtureOnce.Do(func() { sharedCA, fixtureErr = pki.NewCA("test CA", time.Hour) })
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	// Where jobs can see it: only the server's masks hide it from them.
	f := &fixture{dir: jobVisibleDir(t), ca: sharedCA, users: map[string]tls.Certificate{}}
	if err := os.WriteFile(f.path("ca.crt"), f.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	f.issue(t, "svc", pki.Leaf{CN: "tjobs", Usage: x509.ExtKeyUsageServerAuth, Hosts: pki.ServerHosts})
	return f
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// issue writes NAME.crt and NAME.key signed by the fixture's CA.
func (f *fixture) issue(t testing.TB, name string, l pki.Leaf) tls.Certificate {
	t.Helper()
	return writePair(t, f.ca, f.dir, name, l)
}

func writePair(t testing.TB, ca *pki.CA, dir, name string, l pki.Leaf) tls.Certificate {
	t.Helper()
	p, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.Remove(crt)
	os.Remove(key)
	if err := p.Write(crt, key); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// user returns the client certificate of user, made on first use.
func (f *fixture) user(t testing.TB, user string) tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.users[user]; ok {
		return c
	}
	c := f.issue(t, user, pki.Leaf{CN: user, Usage: x509.ExtKeyUsageClientAuth})
	f.users[user] = c
	return c
}

// clientTLS is what a well-behaved client uses, with cert (none if nil).
func (f *fixture) clientTLS(cert *tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.ca.PEM)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// syncBuffer is a log that tests read while the server writes it.
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

// testServer is a Server on a loopback port.
type testServer struct {
	*fixture
	srv   *Server
	g     *grpc.Server
	addr  string
	spool string
	log   *syncBuffer

	shutdownOnce sync.Once
	served       chan error
}

// config is what tests run jobs with: limits loose enough for an init built
// with -race on a slow machine, and tjobs's default user namespaces.
func testConfig() Config {
	return Config{
		CPUPercent:  100,
		MemoryMB:    512,
		PidsMax:     256,
		GracePeriod: time.Second,
		UserNS:      DefaultUserNS,
	}
}

func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	requireRoot(t)
	f := newFixture(t)
	ts := &testServer{fixture: f, log: &syncBuffer{}, served: make(chan error, 1)}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(jobVisibleDir(t), "state")
	}
	ts.spool = filepath.Join(cfg.StateDir, spoolDir)
	cfg.MaskPaths = append(cfg.MaskPaths, f.dir)
	cfg.Log = ts.log
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := TLSConfig(f.path("ca.crt"), f.path("svc.crt"), f.path("svc.key"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.srv, ts.g, ts.addr = srv, srv.NewGRPCServer(tlsCfg), lis.Addr().String()
	go func() { ts.served <- ts.g.Serve(lis) }()
	t.Cleanup(func() {
		ts.shutdown()
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log.String())
		}
	})
	return ts
}

func (ts *testServer) shutdown() {
	ts.shutdownOnce.Do(func() {
		ts.srv.Shutdown(ts.g, 5*time.Second)
		<-ts.served
	})
}

// dial connects with cfg; the connection is closed at the test's end.
func (ts *testServer) dial(t testing.TB, cfg *tls.Config) (*grpc.ClientConn, tjobv1.JobClient) {
	t.Helper()
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, tjobv1.NewJobClient(conn)
}

// client is a Job client for user on a connection of its own.
func (ts *testServer) client(t testing.TB, user string) tjobv1.JobClient {
	t.Helper()
	cert := ts.user(t, user)
	_, c := ts.dial(t, ts.clientTLS(&cert))
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run starts a job and fails the test if it did not start.
func run(t testing.TB, c tjobv1.JobClient, path string, args ...string) string {
	t.Helper()
	resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: path, Args: args})
	if err != nil {
		t.Fatalf("Run %s %q: %v", path, args, err)
	}
	if st := resp.GetStatus(); st.GetState() != tjobv1.State_STATE_RUNNING && st.GetState() != tjobv1.State_STATE_EXITED {
		t.Fatalf("Run %s %q: state %v, error %q", path, args, st.GetState(), st.GetError())
	}
	return resp.GetJobId()
}

// jobStatus is one job's status.
func jobStatus(t testing.TB, c tjobv1.JobClient, id string) *tjobv1.Status {
	t.Helper()
	resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
	if err != nil {
		t.Fatalf("Status %s: %v", id, err)
	}
	if len(resp.GetJobs()) != 1 {
		t.Fatalf("Status %s: %d jobs", id, len(resp.GetJobs()))
	}
	return resp.GetJobs()[0]
}

// logs reads a job's output to the end.
func logs(ctx context.Context, c tjobv1.JobClient, id string, follow bool) ([]byte, error) {
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

// wait follows the job's output to its end, then returns its status.
func wait(t testing.TB, c tjobv1.JobClient, id string) *tjobv1.Status {
	t.Helper()
	if _, err := logs(ctxT(t), c, id, true); err != nil {
		t.Fatalf("Logs -f %s: %v", id, err)
	}
	// Wait returns once the server's record of the job is final, which
	// retention and removal go by; the job's own state says exited a moment
	// earlier.
	w, err := c.Wait(ctxT(t), &tjobv1.WaitRequest{JobId: id})
	if err != nil {
		t.Fatalf("Wait %s: %v", id, err)
	}
	st := w.GetStatus()
	if st.GetState() != tjobv1.State_STATE_EXITED {
		t.Fatalf("job %s: state %v after its output ended", id, st.GetState())
	}
	return st
}

func wantCode(t testing.TB, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, code)
	}
}

// openStreams is the server's own count of user's open Logs streams, which
// its stream limit goes by.
func (ts *testServer) openStreams(user string) int {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	return ts.srv.streams[user]
}
