package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"github.com/neildo/tjob/service/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// tjobsServer is a tjobs process that the harness started.
type tjobsServer struct {
	name   string
	cmd    *exec.Cmd
	pid    int
	addr   string
	spool  string
	log    string        // its standard error
	exited chan struct{} // closed when the process has been waited for
	once   sync.Once
}

// startServer starts tjobs on a free loopback port with the RFD's default
// limits (its own defaults) and waits until it listens. Its quotas are
// off: the benchmarks run GiBs of output and a thousand jobs at once.
func (e *env) startServer(ctx context.Context, name string, environ ...string) (*tjobsServer, error) {
	state := filepath.Join(e.work, "state-"+name)
	spool := filepath.Join(state, "spool") // where tjobs keeps the outputs
	logf, err := os.Create(filepath.Join(e.work, "tjobs-"+name+".log"))
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(e.tjobs,
		"-addr", "127.0.0.1:0",
		"-ca", e.cert("ca.crt"), "-cert", e.cert("svc.crt"), "-key", e.cert("svc.key"),
		"-state", state, "-max-output", "0", "-max-disk", "0", "-max-running", "0")
	cmd.Dir = e.work
	cmd.Env = append(os.Environ(), environ...)
	cmd.Stderr = pw
	// If the harness dies, so does the server, and with it every job
	// (each jail's init notices its lifeline close).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logf.Close()
		return nil, fmt.Errorf("starting tjobs: %w", err)
	}
	pw.Close()
	s := &tjobsServer{name: name, cmd: cmd, pid: cmd.Process.Pid, spool: spool, exited: make(chan struct{}), log: logf.Name()}
	e.recordPid(s.pid)
	addr := make(chan string, 1)
	go func() {
		logUntilEOF(pr, logf, addr)
		pr.Close()
		logf.Close()
	}()
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	e.mu.Lock()
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	select {
	case s.addr = <-addr:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("tjobs exited at start (%v); see its log", cmd.ProcessState)
	case <-time.After(15 * time.Second):
		s.stop()
		return nil, errors.New("tjobs did not listen within 15s")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// logUntilEOF copies tjobs's stderr into its log, and sends the address it
// says it listens on to addr.
func logUntilEOF(stderr io.Reader, log io.Writer, addr chan<- string) {
	const listening = "listening on "
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, line)
		if _, after, ok := strings.Cut(line, listening); ok && !sent {
			if f := strings.Fields(after); len(f) > 0 {
				addr <- f[0]
				sent = true
			}
		}
	}
}

// stop shuts the server down as an operator would (SIGTERM: it stops every
// job and removes their output), then kills it if it takes too long.
func (s *tjobsServer) stop() {
	s.once.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(45 * time.Second):
			fmt.Fprintf(os.Stderr, "bench: tjobs %s did not stop in 45s; killing it\n", s.name)
			s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// connect starts a tjobs and connects to it.
func (e *env) connect(ctx context.Context, name string) (*tjobsServer, *client, error) {
	srv, err := e.startServer(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	c, err := e.dial(ctx, srv)
	if err != nil {
		return nil, nil, err
	}
	return srv, c, nil
}

func (e *env) cert(name string) string { return filepath.Join(e.certs, name) }

// serverTLS is tjobs's TLS configuration, with its certificates: the
// harness's own servers use it, to differ from tjobs in nothing else.
func (e *env) serverTLS() (*tls.Config, error) {
	return server.TLSConfig(e.cert("ca.crt"), e.cert("svc.crt"), e.cert("svc.key"))
}

// clientTLS is the CLI's TLS configuration for the default client "cli".
func (e *env) clientTLS() (*tls.Config, error) {
	return clientTLSConfig(e.cert("ca.crt"), e.cert("cli.crt"), e.cert("cli.key"))
}

// clientCertArgs are the options of the CLI, and of the harness's own
// clients, for the default client's certificates.
func (e *env) clientCertArgs() []string {
	return []string{"-ca", e.cert("ca.crt"), "-cert", e.cert("cli.crt"), "-key", e.cert("cli.key")}
}

// clientTLSConfig is the CLI's TLS configuration: TLS 1.3, the CA, a client
// certificate.
func clientTLSConfig(ca, cert, key string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{pair}}, nil
}

// client is one connection to a server: one TLS session, reused by every call.
type client struct {
	conn   *grpc.ClientConn
	job    tjobv1.JobClient
	health healthpb.HealthClient
}

// dial connects to s and makes one call, so that the TLS handshake is done
// when it returns.
func (e *env) dial(ctx context.Context, s *tjobsServer) (*client, error) {
	cfg, err := e.clientTLS()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, job: tjobv1.NewJobClient(conn), health: healthpb.NewHealthClient(conn)}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.health.Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connecting to tjobs: %w", err)
	}
	return c, nil
}

func (e *env) dialMany(ctx context.Context, s *tjobsServer, n int) ([]*client, error) {
	out := make([]*client, 0, n)
	for range n {
		c, err := e.dial(ctx, s)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func closeAll(cs []*client) {
	for _, c := range cs {
		c.conn.Close()
	}
}

// run starts a job and returns its ID; a job that failed to start is an
// error.
func (c *client) run(ctx context.Context, path string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.job.Run(cctx, &tjobv1.RunRequest{Path: path, Args: args})
	if err != nil {
		return "", err
	}
	if st := resp.GetStatus(); st.GetState() == tjobv1.State_STATE_FAILED {
		return resp.GetJobId(), fmt.Errorf("job failed to start: %s", st.GetError())
	}
	return resp.GetJobId(), nil
}

func (c *client) status(ctx context.Context, id string) (*tjobv1.Status, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.job.Status(cctx, &tjobv1.StatusRequest{JobId: &id})
	if err != nil {
		return nil, err
	}
	if len(resp.GetJobs()) != 1 {
		return nil, fmt.Errorf("status of %s: %d jobs", id, len(resp.GetJobs()))
	}
	return resp.GetJobs()[0], nil
}

// stop stops a job: the Stop RPC returns when the job has ended.
func (c *client) stop(ctx context.Context, id string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.job.Stop(cctx, &tjobv1.StopRequest{JobId: id}); err != nil {
		return fmt.Errorf("Stop: %w", err)
	}
	return nil
}

// waitEnded polls the job's status until it has ended, for at most limit.
func (c *client) waitEnded(ctx context.Context, id string, limit time.Duration) (*tjobv1.Status, error) {
	deadline := time.Now().Add(limit)
	for {
		st, err := c.status(ctx, id)
		if err != nil {
			return nil, err
		}
		if s := st.GetState(); s == tjobv1.State_STATE_EXITED || s == tjobv1.State_STATE_FAILED {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("job %s still %v after %v", id, st.GetState(), limit)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exitedOK checks that a job exited 0.
func exitedOK(st *tjobv1.Status) error {
	if st.GetState() != tjobv1.State_STATE_EXITED || st.GetExit() != 0 || st.Error != nil {
		return fmt.Errorf("job %s: state %v exit %d error %q", st.GetJobId(), st.GetState(), st.GetExit(), st.GetError())
	}
	return nil
}

// cliArgs are the tjob CLI's options to reach the server at addr, then cmd.
func (e *env) cliArgs(addr string, cmd ...string) []string {
	return append(append([]string{"-addr", addr}, e.clientCertArgs()...), cmd...)
}
