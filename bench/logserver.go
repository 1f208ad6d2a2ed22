package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"github.com/neildo/tjob/service/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// chunkServer is a minimal tjob.v1 Job server: Logs sends one file, in
// messages of chunk bytes. It answers any job ID.
type chunkServer struct {
	tjobv1.UnimplementedJobServer
	file  string
	limit int64 // bytes of the file to send; 0: all
	chunk atomic.Int64
}

func (c *chunkServer) Logs(req *tjobv1.LogsRequest, stream grpc.ServerStreamingServer[tjobv1.LogsResponse]) error {
	f, err := os.Open(c.file)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if c.limit > 0 {
		r = io.LimitReader(f, c.limit)
	}
	buf := make([]byte, c.chunk.Load())
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if err := stream.Send(&tjobv1.LogsResponse{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// logserverMain: tjobbench logserver -file F [-limit N] -chunk N -ca -cert
// -key. The minimal Logs server as a process of its own, so that its memory
// can be measured; it prints its address on stdout and serves until killed.
func logserverMain(args []string) int {
	fs := flag.NewFlagSet("logserver", flag.ContinueOnError)
	file := fs.String("file", "", "`file` to send")
	limit := fs.Int64("limit", 0, "send at most this many `bytes`")
	chunk := fs.Int64("chunk", 64<<10, "message size in `bytes`")
	ca := fs.String("ca", "", "CA `file`")
	cert := fs.String("cert", "", "server certificate `file`")
	key := fs.String("key", "", "server key `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := server.TLSConfig(*ca, *cert, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "logserver:", err)
		return 1
	}
	cs := &chunkServer{file: *file, limit: *limit}
	cs.chunk.Store(*chunk)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	tjobv1.RegisterJobServer(g, cs)
	healthpb.RegisterHealthServer(g, health.NewServer()) // the harness's dial checks it
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "logserver:", err)
		return 1
	}
	fmt.Println(ln.Addr())
	if err := g.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "logserver:", err)
		return 1
	}
	return 0
}

// logserverPeak runs the minimal Logs server as a process, has n clients
// read limit bytes of file from it at once, and returns its peak RSS (MiB).
func (e *env) logserverPeak(ctx context.Context, file string, limit, chunk int64, n int) (float64, error) {
	cmd := exec.Command(e.self, "logserver", "-file", file, "-limit", strconv.FormatInt(limit, 10), "-chunk", strconv.FormatInt(chunk, 10),
		"-ca", e.cert("ca.crt"), "-cert", e.cert("svc.crt"), "-key", e.cert("svc.key"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line := make([]byte, 64)
	m, err := out.Read(line)
	if err != nil {
		return 0, fmt.Errorf("logserver: %w", err)
	}
	srv := &tjobsServer{addr: strings.TrimSpace(string(line[:m])), pid: cmd.Process.Pid}
	cs, err := e.dialMany(ctx, srv, n)
	if err != nil {
		return 0, err
	}
	defer closeAll(cs)
	if err := resetPeakRSS(srv.pid); err != nil {
		return 0, err
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	res := make([]followResult, n)
	for i, c := range cs {
		wg.Go(func() {
			stream, err := c.job.Logs(fctx, &tjobv1.LogsRequest{JobId: "any"})
			if err != nil {
				res[i].err = err
				return
			}
			for {
				msg, err := stream.Recv()
				if err == io.EOF {
					return
				}
				if err != nil {
					res[i].err = err
					return
				}
				res[i].n += int64(len(msg.GetData()))
			}
		})
	}
	wg.Wait()
	for _, r := range res {
		if r.err != nil || r.n != limit {
			return 0, fmt.Errorf("logserver client got %d of %d bytes: %v", r.n, limit, r.err)
		}
	}
	hwm, err := statusKB(srv.pid, "VmHWM")
	if err != nil {
		return 0, err
	}
	return hwm["VmHWM"] / 1024, nil
}
