package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"github.com/neildo/tjob/service/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const grpcVersion = grpc.Version

const streamIntro = "A job on tjobs writes 1 GiB (`dd if=/dev/zero bs=1M count=1024`) and ends; then `tjob logs JOB >/dev/null` is timed as a whole process. " +
	"Anchor: a plain Go TLS 1.3 server in the harness, with the same certificates and `tls.Config` as tjobs (mutual TLS), `io.Copy`ing the same spool file " +
	"to a client process (`tjobbench tlscat`, `io.Copy` to stdout, >/dev/null) on loopback. Runs alternate; throughput is 1 GiB / wall time."

// cpuOfProcess is the CPU a finished child used.
func cpuOfProcess(cmd *exec.Cmd) float64 {
	if cmd.ProcessState == nil {
		return 0
	}
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

// anchorServer serves file to every TLS client that connects.
type anchorServer struct {
	ln   net.Listener
	file string
	wg   sync.WaitGroup
}

func (e *env) startAnchor(file string) (*anchorServer, error) {
	cfg, err := server.TLSConfig(e.cert("ca.crt"), e.cert("svc.crt"), e.cert("svc.key"))
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return nil, err
	}
	a := &anchorServer{ln: ln, file: file}
	a.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Go(func() {
				defer c.Close()
				f, err := os.Open(a.file)
				if err != nil {
					return
				}
				defer f.Close()
				io.Copy(c, f)
			})
		}
	})
	return a, nil
}

func (a *anchorServer) close() {
	a.ln.Close()
	a.wg.Wait()
}

// timedRun runs cmd with stdout to /dev/null and returns its wall time.
func timedRun(cmd *exec.Cmd) (time.Duration, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	var errb strings.Builder
	cmd.Stdout, cmd.Stderr = null, &errb
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%s: %v: %s", filepath.Base(cmd.Path), err, strings.TrimSpace(errb.String()))
	}
	return d, nil
}

// countedRun runs cmd and counts what it writes to stdout.
func countedRun(cmd *exec.Cmd) (int64, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, _ := io.Copy(io.Discard, out)
	return n, cmd.Wait()
}

func sectionStream(ctx context.Context, e *env, s *section) error {
	if !e.root {
		s.skipRow("tjob logs of a 1 GiB job", "needs root (tjobs runs jails)")
		return nil
	}
	srv, err := e.startServer(ctx, "stream")
	if err != nil {
		return err
	}
	c, err := e.dial(ctx, srv)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	id, err := c.run(ctx, "dd", ddArgs...)
	if err != nil {
		return err
	}
	st, err := c.waitEnded(ctx, id, 90*time.Second)
	if err != nil {
		return err
	}
	if err := exitedOK(st); err != nil {
		return err
	}
	spool := filepath.Join(srv.spool, id+".out")
	if fi, err := os.Stat(spool); err != nil || fi.Size() != gib {
		return fmt.Errorf("spool file %s: %v (size %d)", spool, err, sizeOf(fi))
	}
	anchor, err := e.startAnchor(spool)
	if err != nil {
		return err
	}
	defer anchor.close()

	logsCmd := func() *exec.Cmd { return exec.Command(e.tjob, e.cliArgs(srv, "logs", id)...) }
	catCmd := func() *exec.Cmd {
		return exec.Command(e.self, "tlscat", "-addr", anchor.ln.Addr().String(),
			"-ca", e.cert("ca.crt"), "-cert", e.cert("cli.crt"), "-key", e.cert("cli.key"))
	}
	// Both must deliver every byte.
	for _, f := range []func() *exec.Cmd{logsCmd, catCmd} {
		cmd := f()
		n, err := countedRun(cmd)
		if err != nil || n != gib {
			return fmt.Errorf("%s delivered %d bytes, want %d (%v)", filepath.Base(cmd.Path), n, gib, err)
		}
	}

	reps := 5
	if e.quick {
		reps = 2
	}
	type v struct {
		name                  string
		mk                    func() *exec.Cmd
		serverPid             int
		xs, clientCPU, srvCPU []float64
	}
	vs := []*v{
		{name: "TLS 1.3 copy of the spool file (anchor)", mk: catCmd, serverPid: os.Getpid()},
		{name: "`tjob logs JOB >/dev/null`", mk: logsCmd, serverPid: srv.pid},
	}
	for i := 0; i < reps && ctx.Err() == nil; i++ {
		for _, x := range vs {
			cpu0, _ := cpuSeconds(x.serverPid)
			cmd := x.mk()
			d, err := timedRun(cmd)
			if err != nil {
				return err
			}
			cpu1, _ := cpuSeconds(x.serverPid)
			x.xs = append(x.xs, gib/d.Seconds()/(1<<20))
			x.clientCPU = append(x.clientCPU, cpuOfProcess(cmd))
			x.srvCPU = append(x.srvCPU, cpu1-cpu0)
		}
	}
	if len(vs[0].xs) == 0 {
		return errors.New("no runs")
	}
	a := summarize(vs[0].xs)
	s.add(fromStats(&row{what: vs[0].name, unit: "MiB/s"}, a, "min–max"))
	t := summarize(vs[1].xs)
	ratio := t.med / a.med
	s.add(fromStats(&row{what: vs[1].name, unit: "MiB/s", anchor: "TLS copy", ratio: pct(ratio) + " of TLS copy",
		target: "≥ 70% of TLS copy", met: yesNo(ratio >= 0.7)}, t, "min–max"))
	for _, x := range vs {
		s.note("%s: CPU per GiB, server side %.2f s, client process %.2f s (medians; the anchor's server side is the harness process, idle otherwise).",
			x.name, summarize(x.srvCPU).med, summarize(x.clientCPU).med)
	}
	if ctx.Err() == nil {
		if err := chunkWhatIf(ctx, e, s, spool, a.med, observeMessageSize(ctx, c, id)); err != nil {
			s.note("The diagnostic with a minimal Logs server failed: %v", err)
		}
	}
	if ratio < 0.7 && ctx.Err() == nil {
		prof, err := e.profile(ctx, "stream", []string{"-p", fmt.Sprintf("%d,%d", srv.pid, os.Getpid())}, func() error {
			_, err := timedRun(logsCmd())
			return err
		})
		if err != nil {
			s.note("Profile failed: %v", err)
		} else {
			s.profiles = append(s.profiles, profileText{"Profile: one `tjob logs` of 1 GiB (tjobs, and the harness with its child `tjob`, the CLI)", prof})
		}
	}
	return nil
}

// chunkWhatIf streams the spool file to the real `tjob logs` from a minimal
// Logs server in the harness (same grpc-go, proto and TLS configuration as
// tjobs) with messages of several sizes: what the message size costs.
func chunkWhatIf(ctx context.Context, e *env, s *section, file string, anchorMed float64, tjobsMsg int64) error {
	cfg, err := server.TLSConfig(e.cert("ca.crt"), e.cert("svc.crt"), e.cert("svc.key"))
	if err != nil {
		return err
	}
	cs := &chunkServer{file: file}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	tjobv1.RegisterJobServer(g, cs)
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go g.Serve(ln)
	defer g.Stop()
	addr := ln.Addr().String()
	certArgs := []string{"-ca", e.cert("ca.crt"), "-cert", e.cert("cli.crt"), "-key", e.cert("cli.key")}
	logs := func() *exec.Cmd {
		return exec.Command(e.tjob, append(append([]string{"-addr", addr}, certArgs...), "logs", "any")...)
	}
	grpccat := func(window int) func() *exec.Cmd {
		return func() *exec.Cmd {
			return exec.Command(e.self, append([]string{"grpccat", "-addr", addr, "-window", strconv.Itoa(window)}, certArgs...)...)
		}
	}
	size := func(n int64) string { return msgSizeName(n, tjobsMsg) }
	ref := tjobsMsg
	if ref <= 0 {
		ref = 32<<10 - 16
	}
	vs := []struct {
		name  string
		chunk int64
		mk    func() *exec.Cmd
	}{
		{"`tjob logs`, messages of " + size(64<<10), 64 << 10, logs},
		{"`tjob logs`, messages of " + size(32<<10-16), 32<<10 - 16, logs},
		{"`tjob logs`, messages of " + size(1<<20-16), 1<<20 - 16, logs},
		{"a minimal grpc-go client (`tjobbench grpccat`, default HTTP/2 windows), messages of " + size(ref), ref, grpccat(0)},
		{"the same client with 4 MiB initial HTTP/2 windows, messages of " + size(ref), ref, grpccat(4 << 20)},
	}
	cs.chunk.Store(vs[0].chunk)
	for _, v := range []func() *exec.Cmd{logs, grpccat(0)} {
		if n, err := countedRun(v()); err != nil || n != gib {
			return fmt.Errorf("reading the minimal Logs server: %d bytes, %v", n, err)
		}
	}
	reps := 3
	if e.quick {
		reps = 1
	}
	xs := make([][]float64, len(vs))
	cpu := make([][]float64, len(vs))
	for r := 0; r < reps && ctx.Err() == nil; r++ {
		for i, v := range vs {
			cs.chunk.Store(v.chunk)
			cmd := v.mk()
			c0, _ := cpuSeconds(os.Getpid())
			d, err := timedRun(cmd)
			if err != nil {
				return err
			}
			c1, _ := cpuSeconds(os.Getpid())
			xs[i] = append(xs[i], gib/d.Seconds()/(1<<20))
			cpu[i] = append(cpu[i], cpuOfProcess(cmd)+c1-c0)
		}
	}
	med := make([]float64, len(vs))
	for i, v := range vs {
		med[i] = math.NaN()
		if len(xs[i]) == 0 {
			continue
		}
		st := summarize(xs[i])
		med[i] = st.med
		s.add(fromStats(&row{what: "diagnostic: a minimal Logs server in the harness (grpc-go, same proto and TLS config) to " + v.name,
			unit: "MiB/s", anchor: "TLS copy", ratio: pct(st.med/anchorMed) + " of TLS copy"}, st, "min–max"))
		s.note("Diagnostic, %s: server and client CPU per GiB together %.2f s.", v.name, summarize(cpu[i]).med)
	}
	if tjobsMsg > 0 {
		s.note("tjobs sent messages of up to %d bytes of output here (observed on a Logs stream of the job).", tjobsMsg)
	}
	if best := math.Max(med[1], med[2]); best > 1.15*med[0] {
		s.note("Messages that fit grpc-go's buffer tiers stream %s faster than 64 KiB ones: grpc-go %s pools message buffers in power-of-two tiers "+
			"(256 B, 4 KiB, 16 KiB, 32 KiB, 1 MiB) and zeroes a pooled buffer's whole capacity on every Get, so a 64 KiB message (65,540 bytes marshalled) "+
			"clears 1 MiB on each side: `runtime.memclrNoHeapPointers` under `mem.(*BinaryTieredBufferPool).Get` in a profile.", ratioX(best/med[0]), grpcVersion)
	}
	if med[4] > 1.15*med[3] {
		s.note("Larger HTTP/2 flow-control windows on the client make the same stream %s faster: grpc-go's default 64 KiB initial windows (grown only by its BDP estimate) hold it back.", ratioX(med[4]/med[3]))
	} else if !math.IsNaN(med[4]) {
		s.note("Larger HTTP/2 windows on the client change little (%s): flow control is not what holds the stream back here.", ratioX(med[4]/med[3]))
	}
	return nil
}

// observeMessageSize reads the first messages of a finished job's Logs
// stream and returns the largest: the server's message size.
func observeMessageSize(ctx context.Context, c *client, id string) int64 {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := c.job.Logs(cctx, &tjobv1.LogsRequest{JobId: id})
	if err != nil {
		return 0
	}
	var most int64
	for range 64 {
		m, err := stream.Recv()
		if err != nil {
			break
		}
		most = max(most, int64(len(m.GetData())))
	}
	return most
}

// grpccatMain: tjobbench grpccat -addr A [-window N] -ca -cert -key. A
// minimal grpc-go client of Logs, with the CLI's TLS configuration and,
// with -window, larger HTTP/2 flow-control windows; output to stdout.
func grpccatMain(args []string) int {
	fs := flag.NewFlagSet("grpccat", flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port`")
	window := fs.Int("window", 0, "initial HTTP/2 stream and connection window in `bytes`; 0: grpc-go's default")
	ca := fs.String("ca", "", "CA `file`")
	cert := fs.String("cert", "", "client certificate `file`")
	key := fs.String("key", "", "client key `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := clientTLSConfig(*ca, *cert, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpccat:", err)
		return 1
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if *window > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(int32(*window)), grpc.WithInitialConnWindowSize(int32(*window)))
	}
	conn, err := grpc.NewClient(*addr, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpccat:", err)
		return 1
	}
	defer conn.Close()
	stream, err := tjobv1.NewJobClient(conn).Logs(context.Background(), &tjobv1.LogsRequest{JobId: "any"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpccat:", err)
		return 1
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpccat:", err)
			return 1
		}
		if _, err := os.Stdout.Write(m.GetData()); err != nil {
			fmt.Fprintln(os.Stderr, "grpccat:", err)
			return 1
		}
	}
}

// msgSizeName names a Logs message size, and says when it is the one tjobs
// was seen to send.
func msgSizeName(n, tjobsMsg int64) string {
	var s string
	switch n {
	case 64 << 10:
		s = "64 KiB"
	case 32<<10 - 16:
		s = "32 KiB − 16 B"
	case 1<<20 - 16:
		s = "1 MiB − 16 B"
	default:
		s = fmt.Sprintf("%d B", n)
	}
	if n == tjobsMsg {
		s += " (the size tjobs sends)"
	}
	return s
}
