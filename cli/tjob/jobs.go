package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

// inFlight is how many jobs' calls stop, rm, wait and inspect make at once.
const inFlight = 16

var cmdLogs = &command{
	name:    "logs",
	args:    "[-f] JOB",
	summary: "print a job's output from its start; -f follows it",
	help: `Writes JOB's output (stdout and stderr, as the job wrote them) from its
start to standard output, byte for byte. With -f, waits for more until the
job ends; Ctrl-C stops following (exit status 130). Where the server kept
only the first part of the output (its -max-output), a line on stderr says
so.

Options:
  -f, --follow   follow the output until the job ends

Examples:
  $ tjob logs 1fcc
  hello
  $ tjob logs -f 1abb6e8a
`,
	flags: func(fs *flag.FlagSet, c *cli) { boolFlag(fs, &c.follow, "f", "follow") },
	nargs: func(n int) bool { return n == 1 },
	run: func(c *cli, args []string) error {
		ctx, interrupted, stop := onSignal(context.Background())
		defer stop()
		return interrupted(c.copyOutput(ctx, args[0], c.follow))
	},
}

// copyOutput writes a job's output to stdout as the server sends it, then,
// where the server cut it, a line on stderr that says so.
func (c *cli) copyOutput(ctx context.Context, job string, follow bool) error {
	stream, err := c.client.Logs(ctx, &tjobv1.LogsRequest{JobId: job, Follow: follow}, grpc.ForceCodecV2(newLogsCodec()))
	if err != nil {
		return c.explain(err)
	}
	var cutAt int64
	var msg tjobv1.LogsResponse // reused: the codec decodes each message's output into its Data
	for {
		err := stream.RecvMsg(&msg)
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.explain(err)
		}
		if _, err := c.stdout.Write(msg.GetData()); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		cutAt = max(cutAt, msg.GetCutAt())
	}
	if cutAt > 0 {
		fmt.Fprintf(c.stderr, "tjob: the output was cut at %d bytes (the server keeps at most that much of a job's output)\n", cutAt)
	}
	return nil
}

var cmdWait = &command{
	name:    "wait",
	args:    "JOB [JOB...]",
	summary: "wait for jobs to end and print their exit codes",
	help: `Waits until each JOB has ended and prints its exit code, a line each, in
the order given: the job's own, 128+N when signal N killed it, 127 when its
command was not found, 126 when it could not be run otherwise. Exits 0 once
all have ended, or 1 when one could not be waited for (a line on stderr
names it). Ctrl-C stops waiting (exit status 130).

Examples:
  $ tjob wait 1abb6e8a 1fcc
  0
  137
`,
	nargs: func(n int) bool { return n >= 1 },
	run: func(c *cli, args []string) error {
		return eachJob(c, context.Background(), args, func(ctx context.Context, job string) (string, error) {
			resp, err := c.client.Wait(ctx, &tjobv1.WaitRequest{JobId: job})
			return strconv.Itoa(exitCodeOf(resp.GetStatus())), err
		}, c.println)
	},
}

var cmdStop = &command{
	name:    "stop",
	args:    "JOB [JOB...]",
	summary: "stop jobs: SIGTERM, then SIGKILL after the grace period",
	help: `Stops each JOB, all at once: SIGTERM first, then SIGKILL to all that is
left of it after its grace period (run --stop-timeout, else the server's)
or -t's. Prints each job's ID once it has ended, in the order given.
Stopping a job that has ended does nothing. Exits 1 when a job could not be
stopped (a line on stderr names it).

Options:
  -t, --time SECONDS   the grace period of this stop: seconds (10) or a
                       duration (1m30s)

Examples:
  $ tjob stop 1abb6e8a
  1abb6e8a-788c-45bf-9996-1b45bb6a99d0
  $ tjob stop -t 1 1abb 1fcc
`,
	flags: func(fs *flag.FlagSet, c *cli) { valueFlag(fs, &c.stopTimeout, "t", "time") },
	nargs: func(n int) bool { return n >= 1 },
	run: func(c *cli, args []string) error {
		req := func(job string) *tjobv1.StopRequest {
			r := &tjobv1.StopRequest{JobId: job}
			if c.stopTimeout.set {
				r.GracePeriod = durationpb.New(c.stopTimeout.d)
			}
			return r
		}
		return eachJob(c, context.Background(), args, func(ctx context.Context, job string) (string, error) {
			resp, err := c.client.Stop(ctx, req(job))
			return resp.GetStatus().GetJobId(), err
		}, c.println)
	},
}

var cmdRm = &command{
	name:    "rm",
	args:    "JOB [JOB...]",
	summary: "remove ended jobs: their records, output and workspaces",
	help: `Removes each JOB that has ended: the server forgets it, its output and its
workspace. A running job is refused unless -f, which kills it first
(SIGKILL, as docker rm -f). Prints each removed job's ID. Exits 1 when a job could not be
removed (a line on stderr names it).

Options:
  -f, --force   stop a running job, then remove it

Examples:
  $ tjob rm 1fcc
  1fcc4f8b-788c-45bf-9996-1b45bb6a99d0
  $ tjob rm -f $(tjob ps -q)
`,
	flags: func(fs *flag.FlagSet, c *cli) { boolFlag(fs, &c.force, "f", "force") },
	nargs: func(n int) bool { return n >= 1 },
	run: func(c *cli, args []string) error {
		return eachJob(c, context.Background(), args, func(ctx context.Context, job string) (string, error) {
			resp, err := c.client.Remove(ctx, &tjobv1.RemoveRequest{JobId: job, Force: c.force})
			return resp.GetJobId(), err
		}, c.println)
	},
}

var cmdInspect = &command{
	name:    "inspect",
	args:    "JOB [JOB...]",
	summary: "print everything the server knows of jobs, as JSON",
	help: `Prints each JOB's full status as a JSON array, one object per job, in the
order given (an array even for one job, as docker inspect). The objects are
the API's Status message (service/proto/tjob/v1/tjob.proto) in the protobuf
JSON mapping, with the proto's own snake_case field names and every field
present: 64-bit numbers are strings ("exit": "0"), durations are "10s",
times RFC 3339. Exits 1 when a job could not be found (a line on stderr
names it); the others are printed still.

Examples:
  $ tjob inspect 1fcc
  [
    {
      "job_id": "1fcc4f8b-788c-45bf-9996-1b45bb6a99d0",
      "cmd": "echo hello",
      ...
  $ tjob inspect 1fcc | jq -r '.[0].args[]'
`,
	nargs: func(n int) bool { return n >= 1 },
	run: func(c *cli, args []string) error {
		var found []*tjobv1.Status
		err := eachJob(c, context.Background(), args, func(ctx context.Context, job string) (*tjobv1.Status, error) {
			ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			defer cancel()
			resp, err := c.client.Status(ctx, &tjobv1.StatusRequest{JobId: &job})
			if err != nil {
				return nil, err
			}
			if len(resp.GetJobs()) != 1 {
				return nil, fmt.Errorf("the server gave %d statuses for job %s", len(resp.GetJobs()), job)
			}
			return resp.GetJobs()[0], nil
		}, func(st *tjobv1.Status) error {
			found = append(found, st)
			return nil
		})
		if werr := writeJSON(c.stdout, found); werr != nil {
			return werr
		}
		return err
	},
}

// println writes a line to stdout.
func (c *cli) println(s string) error {
	_, err := fmt.Fprintln(c.stdout, s)
	return err
}

// eachJob calls do for each of jobs, inFlight at a time, and hands what
// they return to emit in the order of jobs, each as soon as it and those
// before it are done. A job that fails gets a line on stderr that names it;
// eachJob then fails, quietly, once all are done. Ctrl-C (or SIGTERM) ends
// every call and tjob with 130 (143).
func eachJob[T any](c *cli, parent context.Context, jobs []string, do func(ctx context.Context, job string) (T, error), emit func(T) error) error {
	ctx, interrupted, stop := onSignal(parent)
	defer stop()
	type result struct {
		v   T
		err error
	}
	results := make([]chan result, len(jobs))
	slots := make(chan struct{}, inFlight)
	for i, job := range jobs {
		results[i] = make(chan result, 1)
		go func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			v, err := do(ctx, job)
			results[i] <- result{v, err}
		}()
	}
	failed := false
	for i, ch := range results {
		r := <-ch
		if r.err != nil {
			if err := interrupted(r.err); isExit(err) {
				return err
			}
			fmt.Fprintf(c.stderr, "tjob: %v\n", naming(jobs[i], c.explain(r.err)))
			failed = true
			continue
		}
		if err := emit(r.v); err != nil {
			return err
		}
	}
	if failed {
		return exitStatus{code: exitFailed}
	}
	return nil
}

// naming makes sure err names job: the server's own errors do already.
func naming(job string, err error) error {
	if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(job)) {
		return err
	}
	return fmt.Errorf("job %s: %w", job, err)
}
