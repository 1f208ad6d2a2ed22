package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

var cmdPs = &command{
	name:    "ps",
	args:    "",
	summary: "list your running jobs, or all of them with -a",
	help: `Lists your running jobs, newest first; with -a, all your jobs, however many.
COMMAND is the command line as a shell would take it, cut to 20 characters
unless --no-trunc.

Options:
  -a, --all           all jobs, not only running ones
  -q, --quiet         only the jobs' full IDs, a line each
      --no-trunc      full IDs and command lines
      --format FORMAT table (the default), or json: a JSON array of the
                      jobs' statuses, as inspect prints them

Examples:
  $ tjob ps -a
  JOB ID     COMMAND            CREATED          STATUS
  1abb6e8a   "sleep 1000"       3 seconds ago    Up 3 seconds
  3acc4f8b   "sleep 999"        1 minute ago     Exited (143) 50 seconds ago (stopped)
  1fcc4f8b   "echo 'a b' c"     1 minute ago     Exited (0) About a minute ago
  $ tjob rm $(tjob ps -a -q)
`,
	flags: func(fs *flag.FlagSet, c *cli) {
		boolFlag(fs, &c.all, "a", "all")
		boolFlag(fs, &c.quiet, "q", "quiet")
		boolFlag(fs, &c.noTrunc, "no-trunc")
		valueFlag(fs, &c.format, "format")
	},
	nargs: func(n int) bool { return n == 0 },
	run: func(c *cli, args []string) error {
		jobs, err := c.listJobs(c.all)
		if err != nil {
			return err
		}
		switch {
		case c.quiet:
			for _, j := range jobs {
				fmt.Fprintln(c.stdout, j.GetJobId())
			}
			return nil
		case c.format == "json":
			return writeJSON(c.stdout, jobs)
		}
		return writePS(c.stdout, jobs, time.Now(), !c.noTrunc)
	},
}

// listJobs is the caller's running jobs, or all, newest first: every page
// the server has.
func (c *cli) listJobs(all bool) ([]*tjobv1.Status, error) {
	var jobs []*tjobv1.Status
	req := &tjobv1.StatusRequest{All: all}
	for {
		resp, err := c.status(req)
		if err != nil {
			return nil, c.explain(err)
		}
		jobs = append(jobs, resp.GetJobs()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return jobs, nil
		}
	}
}

// status is one Status call, bounded by rpcTimeout.
func (c *cli) status(req *tjobv1.StatusRequest) (*tjobv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	return c.client.Status(ctx, req)
}

// Column widths, as `docker ps` truncates.
const (
	cmdWidth   = 20 // runes of the command, before quoting
	errorWidth = 40 // runes of a start failure's reason
)

// writePS writes jobs as a table like `docker ps`, with IDs, commands and
// errors cut short when trunc:
//
//	JOB ID     COMMAND        CREATED         STATUS
//	1abb6e8a   "sleep 1000"   3 seconds ago   Up 3 seconds
func writePS(w io.Writer, jobs []*tjobv1.Status, now time.Time, trunc bool) error {
	cut := func(s string, n int) string {
		if trunc {
			return ellipsis(s, n)
		}
		return s
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "JOB ID\tCOMMAND\tCREATED\tSTATUS")
	for _, j := range jobs {
		id := j.GetJobId()
		if trunc {
			id = shortID(id)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n",
			id,
			strconv.Quote(cut(commandLine(j), cmdWidth)),
			created(j, now),
			state(j, now, cut))
	}
	return tw.Flush()
}

// commandLine is the job's command line as a shell would need it.
func commandLine(j *tjobv1.Status) string {
	if len(j.GetArgs()) == 0 { // a status without args: its cmd is all there is
		return j.GetCmd()
	}
	return shellJoin(j.GetArgs())
}

func created(j *tjobv1.Status, now time.Time) string {
	if j.GetStarted() == nil {
		return ""
	}
	return ago(now.Sub(j.GetStarted().AsTime()))
}

// state says how the job is, as `docker ps` does: "Up 3 seconds",
// "Exited (0) 1 minute ago", "Exited (137) 2 seconds ago (out of memory)",
// "Exited (143) 2 seconds ago (stopped)".
func state(j *tjobv1.Status, now time.Time, cut func(string, int) string) string {
	switch j.GetState() {
	case tjobv1.State_STATE_STARTING:
		return "Starting"
	case tjobv1.State_STATE_RUNNING:
		// The server's elapsed time: clocks may differ.
		return "Up " + units.HumanDuration(time.Duration(j.GetElapsedSecs()*float64(time.Second)))
	case tjobv1.State_STATE_FAILED:
		return "Failed to start: " + cut(j.GetError(), errorWidth)
	case tjobv1.State_STATE_EXITED:
		s := fmt.Sprintf("Exited (%d)", j.GetExit())
		if j.GetStopped() != nil {
			s += " " + ago(now.Sub(j.GetStopped().AsTime()))
		}
		if j.GetOomKilled() {
			s += " (out of memory)"
		}
		if j.GetStopRequested() {
			s += " (stopped)"
		}
		return s
	}
	return "Unknown"
}

func ago(d time.Duration) string {
	return units.HumanDuration(max(d, 0)) + " ago"
}

// ellipsis shortens s to at most n runes, ending in "…" when it had more.
func ellipsis(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// shellJoin is args as a command line a POSIX shell splits back into args:
// each word as it is where it has nothing a shell would read differently,
// else in single quotes.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, needsQuotes) < 0 {
		return s
	}
	// A ' cannot be in single quotes: end them, add \', begin them again.
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// needsQuotes: anything but ASCII letters, digits and @%+=:,./_- may mean
// something to a shell (as Python's shlex.quote judges).
func needsQuotes(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return false
	}
	return !strings.ContainsRune("@%+=:,./_-", r)
}

// writeJSON writes statuses as a JSON array, one object per job: the API's
// Status in protojson's mapping, with the proto's field names (stable,
// snake_case) and every field, set or not. protojson's own spacing varies
// on purpose; encoding/json indents it the same way every time.
func writeJSON(w io.Writer, jobs []*tjobv1.Status) error {
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	bw := bufio.NewWriter(w)
	bw.WriteString("[")
	var obj bytes.Buffer
	for i, j := range jobs {
		b, err := opts.Marshal(j)
		if err != nil {
			return fmt.Errorf("job %s as JSON: %v", j.GetJobId(), err)
		}
		obj.Reset()
		if err := json.Indent(&obj, b, "  ", "  "); err != nil {
			return fmt.Errorf("job %s as JSON: %v", j.GetJobId(), err)
		}
		if i > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n  ")
		obj.WriteTo(bw)
	}
	if len(jobs) > 0 {
		bw.WriteString("\n")
	}
	bw.WriteString("]\n")
	return bw.Flush()
}
