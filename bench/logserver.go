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
// messages of chunk bytes. It answers any job ID. It tells what grpc-go
// costs, with nothing of tjobs around it.
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

// listenChunks makes a gRPC server of cs, with tjobs's TLS configuration
// and the health service (the harness's dial checks it), listening on a
// free loopback port.
func listenChunks(cs *chunkServer, ca, cert, key string) (*grpc.Server, net.Listener, error) {
	cfg, err := server.TLSConfig(ca, cert, key)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	tjobv1.RegisterJobServer(g, cs)
	healthpb.RegisterHealthServer(g, health.NewServer())
	return g, ln, nil
}

// serveChunks serves cs in the harness until stop is called.
func (e *env) serveChunks(cs *chunkServer) (addr string, stop func(), err error) {
	g, ln, err := listenChunks(cs, e.cert("ca.crt"), e.cert("svc.crt"), e.cert("svc.key"))
	if err != nil {
		return "", nil, err
	}
	go g.Serve(ln)
	return ln.Addr().String(), g.Stop, nil
}

// logserverMain: tjobbench logserver -file F [-limit N] -chunk N -ca -cert
// -key. The minimal Logs server as a process of its own, so that its memory
// can be measured; it prints its address on stdout and serves until killed.
func logserverMain(args []string) int {
	fs := flag.NewFlagSet("logserver", flag.ContinueOnError)
	file := fs.String("file", "", "`file` to send")
	limit := fs.Int64("limit", 0, "send at most this many `bytes`")
	chunk := fs.Int64("chunk", msg64KiB, "message size in `bytes`")
	ca := fs.String("ca", "", "CA `file`")
	cert := fs.String("cert", "", "server certificate `file`")
	key := fs.String("key", "", "server key `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cs := &chunkServer{file: *file, limit: *limit}
	cs.chunk.Store(*chunk)
	g, ln, err := listenChunks(cs, *ca, *cert, *key)
	if err != nil {
		return exitCode("logserver", err)
	}
	fmt.Println(ln.Addr())
	return exitCode("logserver", g.Serve(ln))
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
	clients, err := e.dialMany(ctx, srv, n)
	if err != nil {
		return 0, err
	}
	defer closeAll(clients)
	if err := resetPeakRSS(srv.pid); err != nil {
		return 0, err
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res := make([]followResult, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { res[i] = follow(fctx, c, "any", false) })
	}
	wg.Wait()
	for _, r := range res {
		if r.err != nil || r.n != limit {
			return 0, fmt.Errorf("logserver client got %d of %d bytes: %v", r.n, limit, r.err)
		}
	}
	return peakRSSMiB(srv.pid)
}
