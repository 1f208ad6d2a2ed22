// Command tjob is the client of tjobs: it runs, stops, lists and reads the
// output of jobs on a tjobs server, over gRPC with mutual TLS.
//
//	tjob run [OPTIONS] COMMAND [ARG...]
//	tjob stop [OPTIONS] JOB
//	tjob ps [OPTIONS] [-a]
//	tjob logs [OPTIONS] [-f] JOB
//
// Exit status: 0 on success, 1 when the command failed (one line on stderr
// says why), 2 on a usage error, 130 when Ctrl-C ended `logs` (143 for
// SIGTERM).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	// A command ended by SIGINT (Ctrl-C) or SIGTERM exits 128+N, as a
	// shell reports it: 130 or 143.
)

// rpcTimeout bounds the calls that answer at once (not stop, not logs).
const rpcTimeout = 30 * time.Second

func main() {
	os.Exit(tjobMain(os.Args[1:], os.Stdout, os.Stderr))
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
}

var commands []*command

func init() {
	commands = []*command{cmdRun, cmdStop, cmdPs, cmdLogs}
}

const mainUsage = `Usage: tjob [OPTIONS] COMMAND [OPTIONS] [ARG...]

Runs Linux processes as jobs on a tjobs server, isolated and with resource
limits, and controls them. Each user (the common name of the client
certificate) sees only the jobs it ran.

Commands:
%s
Options of every command:
  -addr host:port   the server (default localhost:8080)
  -ca file          CA certificate (default .tjob/ca.crt)
  -cert file        client certificate (default .tjob/cli.crt)
  -key file         client private key (default .tjob/cli.key)

JOB is a job ID or any prefix of it that names only one of your jobs.
Run 'tjob COMMAND -h' for more about a command.
`

func mainUsageText() string {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-6s %s\n", c.name, c.summary)
	}
	return fmt.Sprintf(mainUsage, b.String())
}

func tjobMain(args []string, stdout, stderr io.Writer) int {
	inv, code := parseArgs(args, stdout, stderr)
	if inv == nil {
		return code
	}
	if err := inv.cmd.run(inv.cli, inv.args); err != nil {
		var ie interrupted
		if errors.As(err, &ie) {
			return int(ie)
		}
		fmt.Fprintf(stderr, "tjob: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// invocation is a command line parsed: the command, its options and its
// positional arguments.
type invocation struct {
	cmd  *command
	cli  *cli
	args []string
}

// parseArgs parses tjob's command line. It returns what to run, or nil and
// the exit code when there is nothing to run: help was asked for (written
// to stdout, exitOK) or the command line is wrong (usage on stderr,
// exitUsage).
func parseArgs(args []string, stdout, stderr io.Writer) (*invocation, int) {
	cl := &cli{stdout: stdout, stderr: stderr}
	// The common options may also come before the command.
	global := flag.NewFlagSet("tjob", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	cl.commonFlags(global)
	if err := global.Parse(args); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "tjob: %v\n\n%s", err, mainUsageText())
		return nil, exitUsage
	} else if err != nil {
		args = []string{"help"}
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
	fs := flag.NewFlagSet("tjob "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cl.commonFlags(fs)
	if c.flags != nil {
		c.flags(fs, cl)
	}
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

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (c *command) usage() string {
	return fmt.Sprintf("Usage: tjob %s [OPTIONS] %s\n\n%s", c.name, c.args, c.help)
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

// cli is one invocation's options and output.
type cli struct {
	addr, ca, cert, key string
	all, follow         bool // ps -a, logs -f
	stdout, stderr      io.Writer
}

// commonFlags adds the options of every command to fs; their defaults are
// what cl holds, or the documented ones.
func (cl *cli) commonFlags(fs *flag.FlagSet) {
	def := func(v, d string) string {
		if v != "" {
			return v
		}
		return d
	}
	fs.StringVar(&cl.addr, "addr", def(cl.addr, "localhost:8080"), "")
	fs.StringVar(&cl.ca, "ca", def(cl.ca, ".tjob/ca.crt"), "")
	fs.StringVar(&cl.cert, "cert", def(cl.cert, ".tjob/cli.crt"), "")
	fs.StringVar(&cl.key, "key", def(cl.key, ".tjob/cli.key"), "")
}

// interrupted is the exit code of a command ended by a signal, which has
// nothing more to say.
type interrupted int

func (i interrupted) Error() string { return fmt.Sprintf("interrupted (%d)", int(i)) }

var cmdRun = &command{
	name:    "run",
	args:    "COMMAND [ARG...]",
	summary: "run a command as a job and print its ID",
	help: `Runs COMMAND with its ARGs as a job on the server, isolated from the host
(namespaces of its own) and with the server's resource limits, and prints
the job's ID. Options must come before COMMAND: what follows it is the
command's.

Examples:
  $ tjob run echo hello
  1fbb6e8a-788c-45bf-9996-1b45bb6a99d0
  $ tjob run sh -c 'while true; do date; sleep 1; done'
  $ tjob run -addr host:8080 ls -la
`,
	nargs: func(n int) bool { return n >= 1 },
	posix: true,
	run: func(c *cli, args []string) error {
		conn, client, err := c.connect()
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		resp, err := client.Run(ctx, &tjobv1.RunRequest{Path: args[0], Args: args[1:]})
		if err != nil {
			return c.explain(err)
		}
		if st := resp.GetStatus(); st.GetState() == tjobv1.State_STATE_FAILED {
			return fmt.Errorf("job failed to start: %s (job %s)", st.GetError(), shortID(resp.GetJobId()))
		}
		fmt.Fprintln(c.stdout, resp.GetJobId())
		return nil
	},
}

var cmdStop = &command{
	name:    "stop",
	args:    "JOB",
	summary: "stop a job: SIGTERM, then SIGKILL after the grace period",
	help: `Stops JOB: SIGTERM first, then SIGKILL to all that is left of it after the
server's grace period (10 seconds by default). Returns when the job has
ended and prints its ID. Stopping a job that has ended does nothing.

Examples:
  $ tjob stop 1abb6e8a
  1abb6e8a-788c-45bf-9996-1b45bb6a99d0
`,
	nargs: func(n int) bool { return n == 1 },
	run: func(c *cli, args []string) error {
		conn, client, err := c.connect()
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, err := client.Stop(context.Background(), &tjobv1.StopRequest{JobId: args[0]})
		if err != nil {
			return c.explain(err)
		}
		fmt.Fprintln(c.stdout, resp.GetStatus().GetJobId())
		return nil
	},
}

var cmdPs = &command{
	name:    "ps",
	args:    "[-a]",
	summary: "list your running jobs, or all of them with -a",
	help: `Lists your running jobs, newest first; with -a, all your jobs.

Options:
  -a    all jobs, not only running ones

Examples:
  $ tjob ps -a
  JOB ID     COMMAND        CREATED          STATUS
  1abb6e8a   "sleep 1000"   3 seconds ago    Up 3 seconds
  1fcc4f8b   "echo hello"   1 minute ago     Exited (0) About a minute ago
`,
	flags: func(fs *flag.FlagSet, c *cli) { fs.BoolVar(&c.all, "a", false, "") },
	nargs: func(n int) bool { return n == 0 },
	run: func(c *cli, args []string) error {
		conn, client, err := c.connect()
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		resp, err := client.Status(ctx, &tjobv1.StatusRequest{All: c.all})
		if err != nil {
			return c.explain(err)
		}
		return writePS(c.stdout, resp.GetJobs(), time.Now())
	},
}

var cmdLogs = &command{
	name:    "logs",
	args:    "[-f] JOB",
	summary: "print a job's output from its start; -f follows it",
	help: `Writes JOB's output (stdout and stderr, as the job wrote them) from its
start to standard output, byte for byte. With -f, waits for more until the
job ends; Ctrl-C stops following (exit status 130).

Options:
  -f    follow the output until the job ends

Examples:
  $ tjob logs 1fcc
  hello
  $ tjob logs -f 1abb6e8a
`,
	flags: func(fs *flag.FlagSet, c *cli) { fs.BoolVar(&c.follow, "f", false, "") },
	nargs: func(n int) bool { return n == 1 },
	run: func(c *cli, args []string) error {
		conn, client, err := c.connect()
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, signaled, stop := interruptible(context.Background())
		defer stop()
		stream, err := client.Logs(ctx, &tjobv1.LogsRequest{JobId: args[0], Follow: c.follow})
		if err != nil {
			return c.explain(err)
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				if ctx.Err() != nil {
					stop()
					if code := signaled(); code != 0 {
						return interrupted(code)
					}
				}
				return c.explain(err)
			}
			if _, err := c.stdout.Write(msg.GetData()); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
		}
	},
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// interruptible returns a context that is canceled by SIGINT or SIGTERM,
// and a function that says which one came (0: none).
func interruptible(parent context.Context) (context.Context, func() int, func()) {
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
	which := func() int {
		<-done
		if s, ok := got.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return 0
	}
	stop := func() {
		signal.Stop(sigs)
		cancel()
	}
	return ctx, which, stop
}
