// Command tjob is the client of tjobs: it runs, stops, lists, waits for,
// removes and reads the output of jobs on a tjobs server, over gRPC with
// mutual TLS. Its commands and options are Docker's where Docker has them.
//
//	tjob run [OPTIONS] COMMAND [ARG...]
//	tjob ps [OPTIONS]
//	tjob logs [OPTIONS] JOB
//	tjob wait [OPTIONS] JOB...
//	tjob stop [OPTIONS] JOB...
//	tjob rm [OPTIONS] JOB...
//	tjob inspect [OPTIONS] JOB...
//	tjob version
//
// Exit status: 0 on success, 1 when the command failed (a line on stderr
// says why, one for each job that failed), 2 on a usage error, 130 when
// Ctrl-C ended it (143 for SIGTERM). `tjob run --attach` exits as the job
// did, or 125, 126 or 127 as `docker run` does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	// A command ended by SIGINT (Ctrl-C) or SIGTERM exits 128+N, as a
	// shell reports it: 130 or 143.
)

// rpcTimeout bounds the calls that answer at once (not those that wait for
// a job: run --attach, logs -f, wait, stop, rm -f).
const rpcTimeout = 30 * time.Second

func main() {
	// One P, unless the user says otherwise: tjob makes one call at a time,
	// and following logs is one pipeline (socket, TLS, gRPC, stdout). With
	// more, gRPC's goroutines hand each frame between threads: tjob logs of
	// 1 GiB took 1.20 s of CPU with two here, 0.94 s with one, and streamed
	// 69% of a TLS copy's throughput against 79% (make bench).
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(tjobMain(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

type command struct {
	name    string
	args    string // after [OPTIONS]
	summary string
	help    string
	flags   func(fs *flag.FlagSet, c *cli) // the command's own flags
	run     func(c *cli, args []string) error
	nargs   func(n int) bool // whether n positional arguments will do
	posix   bool             // flags stop at the first argument (run)
	local   bool             // needs no server (version)
}

var commands []*command

func init() {
	commands = []*command{cmdRun, cmdPs, cmdLogs, cmdWait, cmdStop, cmdRm, cmdInspect, cmdVersion}
}

const mainUsage = `Usage: tjob [OPTIONS] COMMAND [OPTIONS] [ARG...]

Runs Linux processes as jobs on a tjobs server, isolated and with resource
limits, and controls them. Each user (the common name of the client
certificate) sees only the jobs it ran.

Commands:
%s
Options of every command:
  -addr host:port   the server (default $TJOB_ADDR, else localhost:8080)
  -ca file          CA certificate (default $TJOB_CERT_PATH/ca.crt)
  -cert file        client certificate (default $TJOB_CERT_PATH/$TJOB_USER.crt)
  -key file         client private key (default $TJOB_CERT_PATH/$TJOB_USER.key)
  --version         print tjob's version and exit

Environment (an option on the command line wins):
  TJOB_ADDR         the server, host:port
  TJOB_CERT_PATH    the directory of the certificates (default .tjob, as
                    'tjobs certs' makes it)
  TJOB_USER         whose certificate: NAME.crt and NAME.key (default cli)

JOB is a job ID or any prefix of it that names only one of your jobs.
Run 'tjob COMMAND -h' for more about a command.
`

func mainUsageText() string {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	return fmt.Sprintf(mainUsage, b.String())
}

func tjobMain(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	inv, code := parseArgs(args, lookupEnv, stdout, stderr)
	if inv == nil {
		return code
	}
	err := inv.execute()
	var es exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &es):
		if es.err != nil {
			fmt.Fprintf(stderr, "tjob: %v\n", es.err)
		}
		return es.code
	}
	fmt.Fprintf(stderr, "tjob: %v\n", err)
	return inv.cli.failed()
}

// failed is the exit status of a command that failed: exitFailed, but 125
// for an attached run, whose exit statuses below 125 are the job's own.
func (c *cli) failed() int {
	if c.run.attach {
		return exitTjobFailed
	}
	return exitFailed
}

// exitStatus ends tjob with a code of its own, after err (if any) on a line
// of its own: a signal's 128+N, a job's own code, or exitFailed once each
// failure has been told.
type exitStatus struct {
	code int
	err  error
}

func (e exitStatus) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// invocation is a command line parsed: the command, its options and its
// positional arguments.
type invocation struct {
	cmd  *command
	cli  *cli
	args []string
}

// execute runs the command, connected to the server unless it needs none.
func (inv *invocation) execute() error {
	if !inv.cmd.local {
		conn, err := inv.cli.connect()
		if err != nil {
			return err
		}
		defer conn.Close()
	}
	return inv.cmd.run(inv.cli, inv.args)
}

// parseArgs parses tjob's command line. It returns what to run, or nil and
// the exit code when there is nothing to run: help was asked for (written
// to stdout, exitOK) or the command line is wrong (usage on stderr,
// exitUsage).
func parseArgs(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) (*invocation, int) {
	cl := &cli{stdout: stdout, stderr: stderr, lookupEnv: lookupEnv}
	var err error
	if cl.defaults, err = connectionDefaults(lookupEnv); err != nil {
		fmt.Fprintf(stderr, "tjob: %v\n\n%s", err, mainUsageText())
		return nil, exitUsage
	}
	// The common options may also come before the command.
	global := globalFlags(cl)
	if err := global.Parse(args); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "tjob: %v\n\n%s", err, mainUsageText())
		return nil, exitUsage
	} else if err != nil {
		args = []string{"help"}
	} else if cl.version {
		return &invocation{cmd: cmdVersion, cli: cl}, 0
	} else {
		args = global.Args()
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsageText())
		return nil, exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if c := lookupCommand(args[1]); c != nil {
				fmt.Fprint(stdout, c.usage())
				return nil, exitOK
			}
			fmt.Fprintf(stderr, "tjob: unknown command %q\n\n%s", args[1], mainUsageText())
			return nil, exitUsage
		}
		fmt.Fprint(stdout, mainUsageText())
		return nil, exitOK
	}
	c := lookupCommand(name)
	if c == nil {
		fmt.Fprintf(stderr, "tjob: unknown command %q\n\n%s", name, mainUsageText())
		return nil, exitUsage
	}
	fs := c.flagSet(cl)
	pos, err := parse(fs, args[1:], c.posix)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, c.usage())
		return nil, exitOK
	}
	if err == nil && !c.nargs(len(pos)) {
		switch {
		case len(pos) == 0:
			err = errors.New("missing argument")
		default:
			err = fmt.Errorf("unexpected argument %q", pos[len(pos)-1])
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tjob %s: %v\n\n%s", c.name, err, c.usage())
		return nil, exitUsage
	}
	return &invocation{cmd: c, cli: cl, args: pos}, 0
}

// globalFlags are the options before the command: those of every command,
// and -version.
func globalFlags(cl *cli) *flag.FlagSet {
	fs := flag.NewFlagSet("tjob", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cl.commonFlags(fs)
	fs.BoolVar(&cl.version, "version", false, "")
	return fs
}

// flagSet is c's options, the common ones and its own, set in cl.
func (c *command) flagSet(cl *cli) *flag.FlagSet {
	fs := flag.NewFlagSet("tjob "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cl.commonFlags(fs)
	if c.flags != nil {
		c.flags(fs, cl)
	}
	return fs
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (c *command) usage() string {
	return fmt.Sprintf("%s\n\n%s", strings.TrimSpace(fmt.Sprintf("Usage: tjob %s [OPTIONS] %s", c.name, c.args)), c.help)
}

// parse parses flags. With posix, flags end at the first argument (so that
// `tjob run ls -la` runs `ls -la`); without, flags and arguments may mix
// (`tjob logs JOB -f`). "--" ends the flags either way.
func parse(fs *flag.FlagSet, args []string, posix bool) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// Parse stops at the first argument, or after "--", which it drops.
		consumed := len(args) - len(rest)
		dashDash := consumed > 0 && args[consumed-1] == "--"
		if len(rest) == 0 || posix || dashDash {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// boolFlag adds a switch under its names: Docker's short and long ones.
func boolFlag(fs *flag.FlagSet, p *bool, names ...string) {
	for _, n := range names {
		fs.BoolVar(p, n, false, "")
	}
}

// valueFlag adds an option that takes a value under its names.
func valueFlag(fs *flag.FlagSet, v flag.Value, names ...string) {
	for _, n := range names {
		fs.Var(v, n, "")
	}
}

// onSignal returns a context that SIGINT or SIGTERM cancels, and a function
// that turns the error of a call it cut short into the signal's exit status
// (128+N), quietly: there is nothing more to say. Call stop when done.
func onSignal(parent context.Context) (ctx context.Context, interrupted func(error) error, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var got os.Signal
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case got = <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	stop = func() {
		signal.Stop(sigs)
		cancel()
	}
	interrupted = func(err error) error {
		if ctx.Err() == nil {
			return err
		}
		stop()
		<-done
		if s, ok := got.(syscall.Signal); ok {
			return exitStatus{code: 128 + int(s)}
		}
		return err
	}
	return ctx, interrupted, stop
}

// isExit reports whether err ends tjob with an exit status of its own.
func isExit(err error) bool {
	var es exitStatus
	return errors.As(err, &es)
}
