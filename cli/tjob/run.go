package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Exit codes of `tjob run --attach` that are not the job's, as `docker run`
// has them.
const (
	exitTjobFailed  = 125 // tjob itself, or the server, failed
	exitCannotRun   = 126 // the command could not be invoked
	exitCmdNotFound = 127 // the command was not found
)

var cmdRun = &command{
	name:    "run",
	args:    "COMMAND [ARG...]",
	summary: "run a command as a job and print its ID, or follow it with -a",
	help: `Runs COMMAND with its ARGs as a job on the server, isolated from the host
(namespaces of its own) and with resource limits, and prints the job's ID.
Options must come before COMMAND: what follows it is the command's.

A limit not given is the server's default (with tjobs's own defaults: 0.2
CPUs, 20m of memory, 20m/s of disk reads and of writes, 1024 processes);
one above the server's cap is refused. The job's workspace is its /tmp, on
the server's disk: its HOME, and its working directory unless -w says
otherwise.

Options:
  -a, --attach                  follow the job's output until it ends, and
                                exit with its exit status (below)
      --rm                      remove the job once it has ended
  -m, --memory SIZE             memory: 512k, 64m, 1g (in MiB, rounded up)
      --cpus N                  CPUs: 0.5 is half of one
      --pids-limit N            processes and threads at once
      --device-read-bps SIZE    disk reads per second: 10m
      --device-write-bps SIZE   disk writes per second
  -e, --env KEY=value           set a variable in the job; -e KEY passes on
                                KEY's value here, if it has one
      --env-file FILE           read variables from FILE: KEY=value (or KEY)
                                a line, # a comment line; -e wins over it
  -w, --workdir DIR             the working directory in the workspace: a
                                relative path, or one under /tmp; made if
                                missing
      --stop-timeout TIME       between SIGTERM and SIGKILL when the job is
                                stopped: seconds (30) or a duration (1m30s)

Exit status with --attach: the job's own (128+N when signal N killed it);
125 when tjob failed (server unreachable, certificate rejected, request
refused); 126 when the command could not be invoked; 127 when it was not
found. Ctrl-C stops following and exits 130; the job goes on (and with
--rm is removed once it has ended).

Examples:
  $ tjob run echo hello
  1fbb6e8a-788c-45bf-9996-1b45bb6a99d0
  $ tjob run -a --rm --memory 64m --cpus 0.5 -e GREETING=hi sh -c 'echo $GREETING; exit 3'
  hi
  $ echo $?
  3
  $ tjob run -w build --env-file build.env make
  $ tjob run -addr host:8080 ls -la
`,
	flags: func(fs *flag.FlagSet, c *cli) {
		o := &c.run
		boolFlag(fs, &o.attach, "a", "attach")
		boolFlag(fs, &o.remove, "rm")
		valueFlag(fs, &o.memory, "m", "memory")
		valueFlag(fs, &o.cpus, "cpus")
		valueFlag(fs, &o.pids, "pids-limit")
		valueFlag(fs, &o.readBPS, "device-read-bps")
		valueFlag(fs, &o.writeBPS, "device-write-bps")
		valueFlag(fs, &o.env, "e", "env")
		valueFlag(fs, &o.envFiles, "env-file")
		fs.StringVar(&o.workdir, "w", "", "")
		fs.StringVar(&o.workdir, "workdir", "", "")
		valueFlag(fs, &o.stopTimeout, "stop-timeout")
	},
	nargs: func(n int) bool { return n >= 1 },
	posix: true,
	run: func(c *cli, args []string) error {
		req, err := c.run.request(args, c.lookupEnv)
		if err != nil {
			return err
		}
		if c.run.attach {
			return c.runAttached(req)
		}
		resp, err := c.start(context.Background(), req)
		if err != nil {
			return c.explain(err)
		}
		if st := resp.GetStatus(); st.GetState() == tjobv1.State_STATE_FAILED {
			return failedToStart(st)
		}
		fmt.Fprintln(c.stdout, resp.GetJobId())
		return nil
	},
}

// start is the Run call, which answers once the job runs (or failed to).
func (c *cli) start(ctx context.Context, req *tjobv1.RunRequest) (*tjobv1.RunResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	return c.client.Run(ctx, req)
}

// request is the RunRequest for the command line args with these options;
// lookupEnv is tjob's environment, for -e KEY and KEY lines of env files.
func (o *runOptions) request(args []string, lookupEnv func(string) (string, bool)) (*tjobv1.RunRequest, error) {
	var env []string
	for _, name := range o.envFiles {
		vars, err := readEnvFile(name, lookupEnv)
		if err != nil {
			return nil, err
		}
		env = append(env, vars...)
	}
	// As Docker: -e after the files, so that it wins.
	env = lastOfEach(append(env, passEnv(o.env.listFlag, lookupEnv)...))
	req := &tjobv1.RunRequest{
		Path: args[0],
		Args: args[1:],
		Limits: &tjobv1.Limits{
			CpuPercent: int32(o.cpus),
			MemoryMb:   o.memory.mebibytes(),
			ReadBps:    int64(o.readBPS),
			WriteBps:   int64(o.writeBPS),
			PidsMax:    int32(o.pids),
		},
		Env: env,
		Dir: workspaceDir(o.workdir),
		// The server keeps it for the Logs and Wait that follow, and
		// removes it once Wait has its end; or, should tjob go before
		// that, once it has ended.
		Remove: o.remove,
	}
	if o.stopTimeout.set {
		req.GracePeriod = durationpb.New(o.stopTimeout.d)
	}
	return req, nil
}

// passEnv is -e's entries: KEY=value as given, and KEY alone with its value
// in tjob's environment, or left out where it has none (as Docker does).
func passEnv(entries []string, lookupEnv func(string) (string, bool)) []string {
	var env []string
	for _, kv := range entries {
		if strings.Contains(kv, "=") {
			env = append(env, kv)
		} else if v, ok := lookupEnv(kv); ok {
			env = append(env, kv+"="+v)
		}
	}
	return env
}

// lastOfEach keeps the last KEY=value of each KEY, in the order of those
// kept: the job gets one value, the one given last, whatever its libc does
// with an environment that has two.
func lastOfEach(env []string) []string {
	last := map[string]int{}
	for i, kv := range env {
		key, _, _ := strings.Cut(kv, "=")
		last[key] = i
	}
	var kept []string
	for i, kv := range env {
		if key, _, _ := strings.Cut(kv, "="); last[key] == i {
			kept = append(kept, kv)
		}
	}
	return kept
}

// workspaceDir is -w as RunRequest.dir, a path in the job's workspace, which
// the job sees as /tmp: "/tmp/build" is "build". Any other path goes as
// given, for the server to judge.
func workspaceDir(dir string) string {
	const tmp = "/tmp"
	clean := path.Clean(dir)
	switch {
	case clean == tmp:
		return ""
	case strings.HasPrefix(clean, tmp+"/"):
		return strings.TrimPrefix(clean, tmp+"/")
	}
	return dir
}

// readEnvFile reads variables from an --env-file, as Docker does: a
// KEY=value a line, the value taken as written (quotes and spaces are
// part of it); a KEY alone passes on KEY's value in tjob's environment, if
// it has one; blank lines and lines that begin with # are skipped.
func readEnvFile(name string, lookupEnv func(string) (string, bool)) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %v", err)
	}
	defer f.Close()
	env, err := parseEnvFile(f, lookupEnv)
	if err != nil {
		return nil, fmt.Errorf("--env-file %s, %v", name, err)
	}
	return env, nil
}

// parseEnvFile parses an env file; an error begins with its line number.
func parseEnvFile(r io.Reader, lookupEnv func(string) (string, bool)) ([]string, error) {
	var env []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20) // the server takes 128 KiB of env in all
	for n := 1; sc.Scan(); n++ {
		text := sc.Bytes()
		if n == 1 {
			text = bytes.TrimPrefix(text, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
		}
		if !utf8.Valid(text) {
			return nil, fmt.Errorf("line %d: not UTF-8", n)
		}
		line := strings.TrimLeftFunc(string(text), unicode.IsSpace)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, hasValue := strings.Cut(line, "=")
		switch {
		case key == "":
			return nil, fmt.Errorf("line %d: no variable name in %q", n, line)
		case strings.IndexFunc(key, unicode.IsSpace) >= 0:
			return nil, fmt.Errorf("line %d: variable name %q has a space in it", n, key)
		case hasValue:
			env = append(env, key+"="+value)
		default:
			env = append(env, passEnv([]string{key}, lookupEnv)...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return env, nil
}

// runAttached runs the job and follows it to its end, as an attached
// `docker run`: its output on stdout as it comes, then its exit status as
// tjob's. Whatever keeps tjob from it is an error, which exits 125 (see
// cli.failed).
func (c *cli) runAttached(req *tjobv1.RunRequest) error {
	ctx, interrupted, stop := onSignal(context.Background())
	defer stop()
	resp, err := c.start(ctx, req)
	if err != nil {
		return interrupted(c.explain(err))
	}
	id := resp.GetJobId()
	st := resp.GetStatus()
	if st.GetState() != tjobv1.State_STATE_FAILED {
		if err := c.copyOutput(ctx, id, true); err != nil {
			return interrupted(err)
		}
		wait, err := c.client.Wait(ctx, &tjobv1.WaitRequest{JobId: id})
		if err != nil {
			return interrupted(c.explain(err))
		}
		st = wait.GetStatus()
	}
	code := exitCodeOf(st)
	if st.GetState() == tjobv1.State_STATE_FAILED {
		return exitStatus{code: code, err: failedToStart(st)}
	}
	return exitStatus{code: code}
}

// exitCodeOf is an ended job's exit status as a shell reports it, and as
// `docker run` and `docker wait` do: its own exit code (128+N when signal
// N killed it), 127 when it failed to start because its command was not
// found, 126 when it failed to start for another reason. The server says
// why in words only: the library's "exec: \"x\": executable file not found
// in $PATH" or "exec /x: no such file or directory".
func exitCodeOf(st *tjobv1.Status) int {
	if st.GetState() != tjobv1.State_STATE_FAILED {
		return int(st.GetExit())
	}
	reason := strings.ToLower(st.GetError())
	if strings.HasPrefix(reason, "exec") && (strings.Contains(reason, "no such file") || strings.Contains(reason, "not found")) {
		return exitCmdNotFound
	}
	return exitCannotRun
}

// failedToStart says why a job failed to start, naming it.
func failedToStart(st *tjobv1.Status) error {
	return fmt.Errorf("job failed to start: %s (job %s)", st.GetError(), shortID(st.GetJobId()))
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
