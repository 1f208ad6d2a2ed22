package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
)

const streamIntro = "A job on tjobs writes 1 GiB (`dd if=/dev/zero bs=1M count=1024`) and ends; then `tjob logs JOB >/dev/null` is timed as a whole process. " +
	"Anchor: a plain Go TLS 1.3 server in the harness, with the same certificates and `tls.Config` as tjobs (mutual TLS), `io.Copy`ing the same spool file " +
	"to a client process (`tjobbench tlscat`, `io.Copy` to stdout, >/dev/null) on loopback. Runs alternate; throughput is 1 GiB / wall time."

const gib = 1 << 30

// ddArgs make dd write 1 GiB of zeros to stdout.
var ddArgs = []string{"if=/dev/zero", "bs=1M", "count=1024", "status=none"}

// streamClient is a process that reads 1 GiB from a server, timed with the
// CPU that it and its server used.
type streamClient struct {
	name      string
	cmd       func() *exec.Cmd
	serverPid int
	mibps     []float64 // throughput of each run
	clientCPU []float64 // seconds
	serverCPU []float64 // seconds
}

// measure runs the client once.
func (c *streamClient) measure() error {
	cpu0, _ := cpuSeconds(c.serverPid)
	cmd := c.cmd()
	d, err := timed(cmd)
	if err != nil {
		return err
	}
	cpu1, _ := cpuSeconds(c.serverPid)
	c.mibps = append(c.mibps, gib/d.Seconds()/(1<<20))
	c.clientCPU = append(c.clientCPU, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
	c.serverCPU = append(c.serverCPU, cpu1-cpu0)
	return nil
}

// measureAll runs the clients in turn, reps times, unless ctx ends first.
func measureAll(ctx context.Context, clients []*streamClient, reps int) error {
	for i := 0; i < reps && ctx.Err() == nil; i++ {
		for _, c := range clients {
			if err := c.measure(); err != nil {
				return err
			}
		}
	}
	return nil
}

// deliversAll checks that each command writes exactly 1 GiB to stdout.
func deliversAll(cmds ...func() *exec.Cmd) error {
	for _, mk := range cmds {
		cmd := mk()
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil || n != gib {
			return fmt.Errorf("%s delivered %d bytes, want %d (%v)", filepath.Base(cmd.Path), n, gib, err)
		}
	}
	return nil
}

func sectionStream(ctx context.Context, e *env, s *section) error {
	srv, c, err := e.connect(ctx, "stream")
	if err != nil {
		return err
	}
	defer c.conn.Close()
	id, spool, err := writeGiB(ctx, srv, c)
	if err != nil {
		return err
	}
	anchor, err := e.startAnchor(spool)
	if err != nil {
		return err
	}
	defer anchor.close()

	tlsCopy := &streamClient{name: "TLS 1.3 copy of the spool file (anchor)", serverPid: os.Getpid(), cmd: func() *exec.Cmd {
		return exec.Command(e.self, append([]string{"tlscat", "-addr", anchor.ln.Addr().String()}, e.clientCertArgs()...)...)
	}}
	logs := &streamClient{name: "`tjob logs JOB >/dev/null`", serverPid: srv.pid, cmd: func() *exec.Cmd {
		return exec.Command(e.tjob, e.cliArgs(srv.addr, "logs", id)...)
	}}
	if err := deliversAll(tlsCopy.cmd, logs.cmd); err != nil {
		return err
	}
	if err := measureAll(ctx, []*streamClient{tlsCopy, logs}, e.runs(5, 2)); err != nil {
		return err
	}
	if len(tlsCopy.mibps) == 0 {
		return errors.New("no runs")
	}
	a, t := summarize(tlsCopy.mibps), summarize(logs.mibps)
	ratio := t.med / a.med
	s.add(fromStats(&row{what: tlsCopy.name, unit: "MiB/s"}, a, "min–max"))
	s.add(fromStats(&row{what: logs.name, unit: "MiB/s", anchor: "TLS copy", ratio: pct(ratio) + " of TLS copy",
		target: "≥ 70% of TLS copy", met: yesNo(ratio >= 0.7)}, t, "min–max"))
	for _, c := range []*streamClient{tlsCopy, logs} {
		s.note("%s: CPU per GiB, server side %.2f s, client process %.2f s (medians; the anchor's server side is the harness process, idle otherwise).",
			c.name, summarize(c.serverCPU).med, summarize(c.clientCPU).med)
	}
	if ctx.Err() == nil {
		if err := messageSizes(ctx, e, s, spool, a.med, observeMessageSize(ctx, c, id)); err != nil {
			s.note("The diagnostic with a minimal Logs server failed: %v", err)
		}
	}
	if ratio < 0.7 && ctx.Err() == nil {
		e.addProfile(ctx, s, "stream", "Profile: one `tjob logs` of 1 GiB (tjobs, and the harness with its child `tjob`, the CLI)",
			[]string{"-p", fmt.Sprintf("%d,%d", srv.pid, os.Getpid())}, func() error {
				_, err := timed(logs.cmd())
				return err
			})
	}
	return nil
}

// writeGiB runs a job on srv that writes 1 GiB, and returns its ID and
// spool file once it has ended.
func writeGiB(ctx context.Context, srv *tjobsServer, c *client) (id, spool string, err error) {
	id, err = c.run(ctx, "dd", ddArgs...)
	if err != nil {
		return "", "", err
	}
	st, err := c.waitEnded(ctx, id, 90*time.Second)
	if err != nil {
		return "", "", err
	}
	if err := exitedOK(st); err != nil {
		return "", "", err
	}
	spool = filepath.Join(srv.spool, id+".out")
	if fi, err := os.Stat(spool); err != nil || fi.Size() != gib {
		return "", "", fmt.Errorf("spool file %s: want %d bytes: %v", spool, gib, err)
	}
	return id, spool, nil
}

// anchorServer serves file to every TLS client that connects.
type anchorServer struct {
	ln   net.Listener
	file string
	wg   sync.WaitGroup
}

func (e *env) startAnchor(file string) (*anchorServer, error) {
	cfg, err := e.serverTLS()
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

// The Logs message sizes the diagnostics try: grpc-go pools buffers in
// power-of-two tiers, and a message is its data plus a few bytes of framing.
const (
	msg64KiB     = 64 << 10    // over the 32 KiB tier: takes a 1 MiB buffer
	msg32KiBLess = 32<<10 - 16 // fits the 32 KiB tier with its framing
	msg1MiBLess  = 1<<20 - 16  // fits the 1 MiB tier with its framing
)

// messageSizes streams the spool file to the real `tjob logs` from a
// minimal Logs server in the harness (same grpc-go, proto and TLS
// configuration as tjobs) with messages of several sizes, and to a minimal
// grpc-go client with default and large HTTP/2 windows: what the message
// size and flow control cost.
func messageSizes(ctx context.Context, e *env, s *section, file string, anchorMed float64, tjobsMsg int64) error {
	logsrv := &chunkServer{file: file}
	addr, stop, err := e.serveChunks(logsrv)
	if err != nil {
		return err
	}
	defer stop()
	logs := func() *exec.Cmd {
		return exec.Command(e.tjob, e.cliArgs(addr, "logs", "any")...)
	}
	grpccat := func(window int) func() *exec.Cmd {
		return func() *exec.Cmd {
			return exec.Command(e.self, append([]string{"grpccat", "-addr", addr, "-window", strconv.Itoa(window)}, e.clientCertArgs()...)...)
		}
	}
	// The client rows compare two clients on one message size, the largest
	// grpc-go's proto codec sends from its 32 KiB tier: the minimal server
	// marshals with it, where tjobs sends larger messages with a codec of
	// its own (service/server/logcodec.go).
	ref := int64(msg32KiBLess)
	client := func(name string, chunk int64, cmd func() *exec.Cmd) *streamClient {
		return &streamClient{name: name + msgSizeName(chunk, tjobsMsg), serverPid: os.Getpid(), cmd: func() *exec.Cmd {
			logsrv.chunk.Store(chunk)
			return cmd()
		}}
	}
	logs64 := client("`tjob logs`, messages of ", msg64KiB, logs)
	logs32 := client("`tjob logs`, messages of ", msg32KiBLess, logs)
	logs1M := client("`tjob logs`, messages of ", msg1MiBLess, logs)
	grpcDefault := client("a minimal grpc-go client with grpc-go's proto codec (`tjobbench grpccat`, default HTTP/2 windows), messages of ", ref, grpccat(0))
	grpcLarge := client("the same client with 4 MiB initial HTTP/2 windows, messages of ", ref, grpccat(4<<20))
	clients := []*streamClient{logs64, logs32, logs1M, grpcDefault, grpcLarge}
	if err := deliversAll(logs64.cmd, grpcDefault.cmd); err != nil {
		return fmt.Errorf("reading the minimal Logs server: %w", err)
	}
	if err := measureAll(ctx, clients, e.runs(3, 1)); err != nil {
		return err
	}
	for _, c := range clients {
		messageSizeRow(s, c, anchorMed)
	}
	if tjobsMsg > 0 {
		s.note("tjobs sent messages of up to %d bytes of output here (observed on a Logs stream of the job), from buffers of its own behind a few bytes of header "+
			"(service/server/logcodec.go), not marshalled into grpc-go's pooled buffers as the minimal server's are.", tjobsMsg)
	}
	med := func(c *streamClient) float64 { return median(c.mibps) }
	if best := math.Max(med(logs32), med(logs1M)); best > 1.15*med(logs64) {
		s.note("Messages that fit grpc-go's buffer tiers stream %s faster than 64 KiB ones: grpc-go %s pools message buffers in power-of-two tiers "+
			"(256 B, 4 KiB, 16 KiB, 32 KiB, 1 MiB) and zeroes a pooled buffer's whole capacity on every Get, so a 64 KiB message (65,540 bytes marshalled) "+
			"clears 1 MiB on each side: `runtime.memclrNoHeapPointers` under `mem.(*BinaryTieredBufferPool).Get` in a profile.", ratioX(best/med(logs64)), grpc.Version)
	}
	s.note("`tjob logs` decodes Logs messages with a codec of its own (cli/tjob/logcodec.go: from gRPC's buffers into one reused slice), "+
		"where the minimal client uses grpc-go's proto codec (the buffers joined into one, then the output copied into a new slice each message): "+
		"with the same server and messages, `tjob logs` streams %s of the minimal client's throughput, with %s of its client CPU per GiB.",
		ratioX(med(logs32)/med(grpcDefault)), pct(median(logs32.clientCPU)/median(grpcDefault.clientCPU)))
	if gain := med(grpcLarge) / med(grpcDefault); gain > 1.15 {
		s.note("Larger HTTP/2 flow-control windows on the client make the same stream %s faster: grpc-go's default 64 KiB initial windows (grown only by its BDP estimate) hold it back.", ratioX(gain))
	} else if !math.IsNaN(gain) {
		s.note("Larger HTTP/2 windows on the client change little (%s): flow control is not what holds the stream back here.", ratioX(gain))
	}
	return nil
}

// messageSizeRow adds the row of a client of the minimal Logs server,
// which runs in the harness: the harness's CPU is the server's.
func messageSizeRow(s *section, c *streamClient, anchorMed float64) {
	if len(c.mibps) == 0 {
		return
	}
	st := summarize(c.mibps)
	s.add(fromStats(&row{what: "diagnostic: a minimal Logs server in the harness (grpc-go, same proto and TLS config) to " + c.name,
		unit: "MiB/s", anchor: "TLS copy", ratio: pct(st.med/anchorMed) + " of TLS copy"}, st, "min–max"))
	together := make([]float64, len(c.clientCPU))
	for i := range together {
		together[i] = c.clientCPU[i] + c.serverCPU[i]
	}
	s.note("Diagnostic, %s: server and client CPU per GiB together %.2f s.", c.name, summarize(together).med)
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

// msgSizeName names a Logs message size, and says when it is the one tjobs
// was seen to send.
func msgSizeName(n, tjobsMsg int64) string {
	var s string
	switch n {
	case msg64KiB:
		s = "64 KiB"
	case msg32KiBLess:
		s = "32 KiB − 16 B"
	case msg1MiBLess:
		s = "1 MiB − 16 B"
	default:
		s = fmt.Sprintf("%d B", n)
	}
	if n == tjobsMsg {
		s += " (the size tjobs sends)"
	}
	return s
}
