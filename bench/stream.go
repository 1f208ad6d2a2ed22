package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
		if err := chunkWhatIf(ctx, e, s, spool, a.med); err != nil {
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
func chunkWhatIf(ctx context.Context, e *env, s *section, file string, anchorMed float64) error {
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
	mk := func() *exec.Cmd {
		return exec.Command(e.tjob, "-addr", addr, "-ca", e.cert("ca.crt"), "-cert", e.cert("cli.crt"), "-key", e.cert("cli.key"), "logs", "any")
	}
	sizes := []struct {
		n    int64
		name string
	}{
		{64 << 10, "64 KiB (as tjobs: logChunk)"},
		{32<<10 - 16, "32 KiB − 16 B"},
		{1<<20 - 16, "1 MiB − 16 B"},
	}
	cs.chunk.Store(sizes[0].n)
	if n, err := countedRun(mk()); err != nil || n != gib {
		return fmt.Errorf("tjob logs from the minimal server: %d bytes, %v", n, err)
	}
	reps := 3
	if e.quick {
		reps = 1
	}
	xs := make([][]float64, len(sizes))
	cpu := make([][]float64, len(sizes))
	for r := 0; r < reps && ctx.Err() == nil; r++ {
		for i, sz := range sizes {
			cs.chunk.Store(sz.n)
			cmd := mk()
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
	for i, sz := range sizes {
		if len(xs[i]) == 0 {
			continue
		}
		st := summarize(xs[i])
		s.add(fromStats(&row{what: "diagnostic: `tjob logs` from a minimal Logs server in the harness (grpc-go, same proto and TLS config), messages of " + sz.name,
			unit: "MiB/s", anchor: "TLS copy", ratio: pct(st.med/anchorMed) + " of TLS copy"}, st, "min–max"))
		s.note("Diagnostic, messages of %s: server and client CPU per GiB together %.2f s.", sz.name, summarize(cpu[i]).med)
	}
	if len(xs[0]) > 0 && len(xs[1]) > 0 && len(xs[2]) > 0 {
		m64, best := summarize(xs[0]).med, max(summarize(xs[1]).med, summarize(xs[2]).med)
		if best > 1.15*m64 {
			s.note("Messages sized to fit grpc-go's buffer tiers stream %s faster than 64 KiB ones. grpc-go %s pools message buffers in power-of-two tiers "+
				"(256 B, 4 KiB, 16 KiB, 32 KiB, 1 MiB) and zeroes a pooled buffer's whole capacity on every Get: a 64 KiB chunk marshals to 65,540 bytes, "+
				"which takes a 1 MiB buffer, so each 64 KiB sent clears 1 MiB on the server (and each one received, on the client). "+
				"That is the `runtime.memclrNoHeapPointers` under `mem.(*BinaryTieredBufferPool).Get` in the profiles.", ratioX(best/m64), grpcVersion)
		} else {
			s.note("The message size made no large difference here (best %s of 64 KiB).", ratioX(best/m64))
		}
	}
	return nil
}
