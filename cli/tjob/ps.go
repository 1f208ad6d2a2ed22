package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

// Column widths, as `docker ps` truncates.
const (
	cmdWidth   = 20 // runes of the command, before quoting
	errorWidth = 40 // runes of a start failure's reason
)

// writePS writes jobs as a table like `docker ps`:
//
//	JOB ID     COMMAND        CREATED         STATUS
//	1abb6e8a   "sleep 1000"   3 seconds ago   Up 3 seconds
func writePS(w io.Writer, jobs []*tjobv1.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "JOB ID\tCOMMAND\tCREATED\tSTATUS")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n",
			shortID(j.GetJobId()),
			strconv.Quote(ellipsis(j.GetCmd(), cmdWidth)),
			created(j, now),
			state(j, now))
	}
	return tw.Flush()
}

func created(j *tjobv1.Status, now time.Time) string {
	if j.GetStarted() == nil {
		return ""
	}
	return ago(now.Sub(j.GetStarted().AsTime()))
}

// state says how the job is, as `docker ps` does: "Up 3 seconds",
// "Exited (0) 1 minute ago", "Exited (137) 2 seconds ago (out of memory)".
func state(j *tjobv1.Status, now time.Time) string {
	switch j.GetState() {
	case tjobv1.State_STATE_STARTING:
		return "Starting"
	case tjobv1.State_STATE_RUNNING:
		// The server's elapsed time: clocks may differ.
		return "Up " + units.HumanDuration(time.Duration(j.GetElapsedSecs()*float64(time.Second)))
	case tjobv1.State_STATE_FAILED:
		return "Failed to start: " + ellipsis(j.GetError(), errorWidth)
	case tjobv1.State_STATE_EXITED:
		s := fmt.Sprintf("Exited (%d)", j.GetExit())
		if j.GetStopped() != nil {
			s += " " + ago(now.Sub(j.GetStopped().AsTime()))
		}
		if j.GetOomKilled() {
			s += " (out of memory)"
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
