// Command tjobs is the tjob server: it runs jobs for tjob clients over gRPC
// with mutual TLS.
//
//	tjobs [-addr localhost:8080] [-ca .tjob/ca.crt] [-cert .tjob/svc.crt] [-key .tjob/svc.key] ...
//	tjobs certs [-dir .tjob] [-host NAME_OR_IP,...] [NAME...]
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
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/neildo/tjob"
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
       tjobs certs [-dir DIR] [-host NAME_OR_IP,...] [NAME...]

Serves the tjob API on ADDR with mutual TLS: clients need a certificate from
the CA, and each sees only the jobs run with its certificate's common name.
Every job runs in namespaces of its own with the limits below (0: no limit);
the certificate directories and the state directory are hidden from it, the
host's other files are read-only to it, and it starts in its workspace, its
/tmp.
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
	state := fs.String("state", ".tjob/state", "`dir`ectory of the jobs' records, outputs and workspaces, which one tjobs owns at a time")
	fs.StringVar(state, "spool", ".tjob/state", "the same as -state (its former name)")
	var cfg server.Config
	fs.IntVar(&cfg.CPUPercent, "cpu-percent", server.DefaultCPUPercent, "CPU of a job that asks for none, in `percent` of one CPU")
	fs.IntVar(&cfg.MemoryMB, "memory-mb", server.DefaultMemoryMB, "memory of a job that asks for none, in `MiB`")
	fs.IntVar(&cfg.ReadBPS, "read-bps", server.DefaultReadBPS, "disk reads of a job that asks for none, in `bytes` per second")
	fs.IntVar(&cfg.WriteBPS, "write-bps", server.DefaultWriteBPS, "disk writes of a job that asks for none, in `bytes` per second")
	fs.IntVar(&cfg.PidsMax, "pids-max", server.DefaultPidsMax, "processes and threads of a job that asks for none, at `most`")
	fs.IntVar(&cfg.Caps.CPUPercent, "max-cpu-percent", server.DefaultMaxCPUPercent, "the most CPU a job may ask for, in `percent` of one CPU (0: no cap)")
	fs.IntVar(&cfg.Caps.MemoryMB, "max-memory-mb", server.DefaultMaxMemoryMB, "the most memory a job may ask for, in `MiB` (0: no cap)")
	fs.IntVar(&cfg.Caps.ReadBPS, "max-read-bps", server.DefaultMaxReadBPS, "the most disk reads a job may ask for, in `bytes` per second (0: no cap)")
	fs.IntVar(&cfg.Caps.WriteBPS, "max-write-bps", server.DefaultMaxWriteBPS, "the most disk writes a job may ask for, in `bytes` per second (0: no cap)")
	fs.IntVar(&cfg.Caps.PidsMax, "max-pids", server.DefaultMaxPids, "the most processes and threads a job may ask for (0: no cap)")
	fs.IntVar(&cfg.MaxRunning, "max-running", server.DefaultMaxRunning, "running jobs per user, at `most` (0: no quota)")
	cfg.MaxOutput, cfg.MaxDisk = server.DefaultMaxOutput, server.DefaultMaxDisk
	fs.Var((*sizeFlag)(&cfg.MaxOutput), "max-output", "output kept of each job, at most (`size`: 512k, 1m, 2g; 0: no quota); the rest is dropped")
	fs.Var((*sizeFlag)(&cfg.MaxDisk), "max-disk", "outputs and workspaces kept on disk in all (`size`; 0: no quota); Run is refused when full")
	fs.IntVar(&cfg.Retain, "retain", server.DefaultRetain, "ended jobs kept per user, at `most`; the oldest are removed (0: keep all)")
	cfg.RetainFor = server.DefaultRetainFor
	fs.Var((*daysFlag)(&cfg.RetainFor), "retain-for", "how long ended jobs are kept (`duration`: 90m, 36h, 7d; 0: for ever)")
	ioDevs := fs.String("io-devices", "", "comma-separated block `devices` (/dev/sda or MAJOR:MINOR) that -read-bps and\n-write-bps limit; default: the disks behind / and the state directory")
	fs.DurationVar(&cfg.GracePeriod, "grace", tjob.DefaultGracePeriod, "time between SIGTERM and SIGKILL when a job is stopped, unless it asks otherwise")
	userns := fs.String("userns-range", fmt.Sprintf("%d:%d", server.DefaultUserNS.HostID, server.DefaultUserNS.Size),
		fmt.Sprintf("host user and group IDs `FIRST:COUNT` for the jobs' user namespaces: each running job's root\nis a host user of its own, with %d IDs; off runs jobs as host root", server.UserNSBlock))
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Println(versionString("tjobs"))
		return 0
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
	for _, f := range []string{*caFile, *certFile, *keyFile} {
		dir, err := filepath.Abs(filepath.Dir(f))
		if err != nil {
			return fail(err)
		}
		if dir == "/" {
			return fail(fmt.Errorf("%s: keep certificates in a directory of their own, not in /", f))
		}
		cfg.MaskPaths = append(cfg.MaskPaths, dir)
	}
	if cfg.UserNS, err = server.ParseIDRange(*userns); err != nil {
		return fail(fmt.Errorf("-userns-range: %w", err))
	}
	for _, d := range strings.Split(*ioDevs, ",") {
		if d = strings.TrimSpace(d); d != "" {
			cfg.IODevices = append(cfg.IODevices, d)
		}
	}
	cfg.StateDir = *state
	cfg.Log = stderr
	srv, err := server.New(cfg)
	if err != nil {
		return fail(err)
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		srv.Shutdown(srv.NewGRPCServer(tlsConfig), 0)
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

	fmt.Fprintf(stderr, "%s tjobs: listening on %s (state %s)\n", now(), lis.Addr(), cfg.StateDir)
	if err := g.Serve(lis); err != nil {
		return fail(err)
	}
	<-done
	return 0
}

// sizeFlag is a size in bytes, written as Docker writes them: 512k, 1m, 2g.
type sizeFlag int64

func (f *sizeFlag) String() string { return units.BytesSize(float64(*f)) }
func (f *sizeFlag) Set(s string) error {
	n, err := units.RAMInBytes(s)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size such as 512k, 1m or 2g", s)
	}
	*f = sizeFlag(n)
	return nil
}

// daysFlag is a duration that may also be in days: 7d.
type daysFlag time.Duration

func (f *daysFlag) String() string {
	d := time.Duration(*f)
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func (f *daysFlag) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 90m, 36h or 7d", s)
		}
		*f = daysFlag(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a duration such as 90m, 36h or 7d", s)
	}
	*f = daysFlag(d)
	return nil
}

func now() string { return time.Now().Format("2006-01-02T15:04:05.000Z07:00") }

const certsUsage = `Usage: tjobs certs [-dir DIR] [-host NAME_OR_IP,...] [NAME...]

Makes the certificates for mutual TLS in DIR (ECDSA P-256):
  ca.crt  ca.key    the CA that signs the others, "tjob CA" and a random
                    suffix, so that an error that names a CA says which
  svc.crt svc.key   tjobs (server; localhost, 127.0.0.1, ::1 and the -host
                    names and addresses, for clients on other machines)
  cli.crt cli.key   the client "cli", the CLI's default
  NAME.crt NAME.key a client whose user (common name) is NAME, for each NAME
Keys are written 0600. Nothing is ever overwritten: when DIR holds a CA, it
signs the pairs that are missing, so running it again adds users; an
existing svc.crt stays as it is, even when -host names more (it says so:
remove svc.crt and svc.key to make a new one).

Examples: tjobs certs bob      (then: TJOB_USER=bob tjob ps)
          tjobs certs -host tjobs.example.com,10.0.0.5
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
	hosts := fs.String("host", "", "comma-separated DNS `names and IP addresses` the server certificate is valid for too")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	extra := strings.FieldsFunc(*hosts, func(r rune) bool { return r == ',' || r == ' ' })
	if err := pki.Init(*dir, fs.Args(), extra, stdout); err != nil {
		fmt.Fprintf(stderr, "tjobs certs: %v\n", err)
		return 1
	}
	return 0
}

// versionString is the program's module version and commit, from the build
// information Go embeds.
func versionString(prog string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return prog + " (no build information)"
	}
	v := prog + " " + info.Main.Version
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " commit " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += " (modified)"
			}
		}
	}
	return v + " " + info.GoVersion
}
