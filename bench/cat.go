package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// catMain: tjobbench tlscat|grpccat -addr A -ca F -cert F -key F [-window N].
// The clients of the streaming benchmark's anchors, processes of their own
// as `tjob logs` is, with its certificates, copying what a server sends to
// stdout: tlscat is a plain TLS 1.3 client; grpccat a minimal grpc-go client
// of Logs with grpc-go's proto codec, as a client of tjob.v1 would write it,
// with -window for larger HTTP/2 flow-control windows.
func catMain(cmd string, args []string) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port`")
	ca := fs.String("ca", "", "CA `file`")
	cert := fs.String("cert", "", "client certificate `file`")
	key := fs.String("key", "", "client key `file`")
	window := fs.Int("window", 0, "grpccat: initial HTTP/2 stream and connection window in `bytes`; 0: grpc-go's default")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := clientTLSConfig(*ca, *cert, *key)
	if err == nil && cmd == "tlscat" {
		err = tlscat(*addr, cfg)
	} else if err == nil {
		err = grpccat(*addr, cfg, int32(*window))
	}
	return exitCode(cmd, err)
}

func tlscat(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = io.Copy(os.Stdout, conn)
	return err
}

func grpccat(addr string, cfg *tls.Config, window int32) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if window > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := tjobv1.NewJobClient(conn).Logs(context.Background(), &tjobv1.LogsRequest{JobId: "any"})
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := os.Stdout.Write(m.GetData()); err != nil {
			return err
		}
	}
}

// exitCode is a subcommand's exit code for err, which it reports.
func exitCode(cmd string, err error) int {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, err)
		return 1
	}
	return 0
}
