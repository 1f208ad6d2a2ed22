// Command tjobs is the tjob server: it runs jobs for tjob clients over gRPC
// with mutual TLS.
//
//	tjobs [-addr localhost:8080] [-ca .tjob/ca.crt] [-cert .tjob/svc.crt] [-key .tjob/svc.key] ...
//	tjobs certs [-dir .tjob] [NAME...]
//
// Run `tjobs -h` and `tjobs certs -h` for the flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/neildo/tjob/service/pki"
	"github.com/neildo/tjob/service/server"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "certs" {
		os.Exit(certs(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(serve(os.Args[1:], os.Stderr))
}

const serveUsage = `Usage: tjobs [OPTIONS]
       tjobs certs [-dir DIR] [NAME...]

Serves the tjob API on ADDR with mutual TLS: clients need a certificate from
the CA, and each sees only the jobs run with its certificate's common name.
Every job runs in namespaces of its own with the limits below (0: no limit);
the certificate directories and the spool directory are hidden from it, the
host's other files are read-only to it, and it starts in a private /tmp.
SIGTERM or SIGINT stops every job and exits; a second one exits at once.

Start with certificates:  tjobs certs          (makes .tjob/)
                          tjobs
Options:
`

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tjobs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, serveUsage)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "localhost:8080", "listen on `host:port`")
	caFile := fs.String("ca", ".tjob/ca.crt", "CA certificate `file` that client certificates must chain to")
	certFile := fs.String("cert", ".tjob/svc.crt", "server certificate `file`")
	keyFile := fs.String("key", ".tjob/svc.key", "server private key `file`")
	spool := fs.String("spool", ".tjob/spool", "`dir`ectory for the jobs' output, owned by tjobs")
	cpu := fs.Int("cpu-percent", server.DefaultCPUPercent, "CPU of each job, in `percent` of one CPU")
	mem := fs.Int("memory-mb", server.DefaultMemoryMB, "memory of each job, in `MiB`")
	rbps := fs.Int("read-bps", server.DefaultReadBPS, "disk reads of each job, in `bytes` per second")
	wbps := fs.Int("write-bps", server.DefaultWriteBPS, "disk writes of each job, in `bytes` per second")
	pids := fs.Int("pids-max", server.DefaultPidsMax, "processes and threads of each job, at `most`")
	ioDevs := fs.String("io-devices", "", "comma-separated block `devices` (/dev/sda or MAJOR:MINOR) that -read-bps and\n-write-bps limit; default: the disk behind / (needed when / is not on a disk)")
	grace := fs.Duration("grace", 10*time.Second, "time between SIGTERM and SIGKILL when a job is stopped")
	userns := fs.String("userns-range", fmt.Sprintf("%d:%d", server.DefaultUserNS.HostID, server.DefaultUserNS.Size),
		fmt.Sprintf("host user and group IDs `FIRST:COUNT` for the jobs' user namespaces: each running job's root\nis a host user of its own, with %d IDs; off runs jobs as host root", server.UserNSBlock))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tjobs: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "tjobs: %v\n", err)
		return 1
	}

	tlsConfig, err := server.TLSConfig(*caFile, *certFile, *keyFile)
	if err != nil {
		return fail(fmt.Errorf("%w (make certificates with: tjobs certs)", err))
	}
	// Jobs see the host's files: hide every directory that holds a key.
	var mask []string
	for _, f := range []string{*caFile, *certFile, *keyFile} {
		dir, err := filepath.Abs(filepath.Dir(f))
		if err != nil {
			return fail(err)
		}
		if dir == "/" {
			return fail(fmt.Errorf("%s: keep certificates in a directory of their own, not in /", f))
		}
		mask = append(mask, dir)
	}
	idRange, err := server.ParseIDRange(*userns)
	if err != nil {
		return fail(fmt.Errorf("-userns-range: %w", err))
	}
	var devices []string
	for _, d := range strings.Split(*ioDevs, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		if err := checkDevice(d); err != nil {
			return fail(err)
		}
		devices = append(devices, d)
	}
	srv, err := server.New(server.Config{
		SpoolDir:    *spool,
		MaskPaths:   mask,
		CPUPercent:  *cpu,
		MemoryMB:    *mem,
		ReadBPS:     *rbps,
		WriteBPS:    *wbps,
		IODevices:   devices,
		PidsMax:     *pids,
		GracePeriod: *grace,
		UserNS:      idRange,
		Log:         stderr,
	})
	if err != nil {
		return fail(err)
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fail(err)
	}
	g := srv.NewGRPCServer(tlsConfig)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		sig := <-sigs
		fmt.Fprintf(stderr, "%s tjobs: %v: shutting down (again to exit now)\n", now(), sig)
		go func() {
			sig := <-sigs
			fmt.Fprintf(stderr, "%s tjobs: %v: exiting now\n", now(), sig)
			os.Exit(1)
		}()
		srv.Shutdown(g, 5*time.Second)
		close(done)
	}()

	fmt.Fprintf(stderr, "%s tjobs: listening on %s (spool %s)\n", now(), lis.Addr(), *spool)
	if err := g.Serve(lis); err != nil {
		return fail(err)
	}
	<-done
	return 0
}

// checkDevice checks an -io-devices entry: a block device file, or
// MAJOR:MINOR.
func checkDevice(d string) error {
	if strings.HasPrefix(d, "/") {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("-io-devices: %w", err)
		}
		if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return fmt.Errorf("-io-devices: %s is not a block device", d)
		}
		return nil
	}
	var major, minor uint
	if n, err := fmt.Sscanf(d, "%d:%d", &major, &minor); err != nil || n != 2 || fmt.Sprintf("%d:%d", major, minor) != d {
		return fmt.Errorf("-io-devices: %q is neither a device file nor MAJOR:MINOR", d)
	}
	return nil
}

func now() string { return time.Now().Format("2006-01-02T15:04:05.000Z07:00") }

const certsUsage = `Usage: tjobs certs [-dir DIR] [NAME...]

Makes the certificates for mutual TLS in DIR (ECDSA P-256):
  ca.crt  ca.key    the CA that signs the others
  svc.crt svc.key   tjobs (server; localhost, 127.0.0.1, ::1)
  cli.crt cli.key   the client "cli", the CLI's default
  NAME.crt NAME.key a client whose user (common name) is NAME, for each NAME
Keys are written 0600. Nothing is ever overwritten: when DIR holds a CA, it
signs the pairs that are missing, so running it again adds users.

Example:  tjobs certs bob      (then: tjob -cert .tjob/bob.crt -key .tjob/bob.key ps)
Options:
`

func certs(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tjobs certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, certsUsage)
		fs.PrintDefaults()
	}
	dir := fs.String("dir", ".tjob", "`dir`ectory to write to")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := pki.Init(*dir, fs.Args(), stdout); err != nil {
		fmt.Fprintf(stderr, "tjobs certs: %v\n", err)
		return 1
	}
	return 0
}
