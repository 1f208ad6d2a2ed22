package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestWritePS(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }
	exit := func(c int64) *int64 { return &c }
	msg := "exec: \"nope\": executable file not found in $PATH"
	jobs := []*tjobv1.Status{
		{JobId: "1abb6e8a-788c-45bf-9996-1b45bb6a99d0", Cmd: "sleep 1000", State: tjobv1.State_STATE_RUNNING,
			Started: at(3 * time.Second), ElapsedSecs: 3.2},
		{JobId: "1fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "echo hello", State: tjobv1.State_STATE_EXITED,
			Started: at(70 * time.Second), Stopped: at(69 * time.Second), Exit: exit(0)},
		{JobId: "2fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "stress --vm 1 --vm-bytes 1G", State: tjobv1.State_STATE_EXITED,
			Started: at(3 * time.Hour), Stopped: at(2 * time.Hour), Exit: exit(137), Signal: 9, OomKilled: true},
		{JobId: "3fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "nope", State: tjobv1.State_STATE_FAILED,
			Started: at(time.Minute), Stopped: at(time.Minute), Exit: exit(-1), Error: &msg},
	}
	var b bytes.Buffer
	if err := writePS(&b, jobs, now); err != nil {
		t.Fatal(err)
	}
	want := `JOB ID     COMMAND                  CREATED          STATUS
1abb6e8a   "sleep 1000"             3 seconds ago    Up 3 seconds
1fcc4f8b   "echo hello"             About a minute ago   Exited (0) About a minute ago
2fcc4f8b   "stress --vm 1 --vm-…"   3 hours ago      Exited (137) 2 hours ago (out of memory)
3fcc4f8b   "nope"                   About a minute ago   Failed to start: exec: "nope": executable file not found…
`
	// Cell by cell: the widths are tabwriter's business.
	got := strings.Split(b.String(), "\n")
	for i, line := range strings.Split(want, "\n") {
		if i >= len(got) {
			t.Fatalf("missing line %d: %q\n%s", i, line, b.String())
		}
		wf, gf := splitCells(line), splitCells(got[i])
		if strings.Join(wf, "|") != strings.Join(gf, "|") {
			t.Errorf("line %d:\n got %q\nwant %q", i, gf, wf)
		}
	}
}

// splitCells splits a table line at runs of 3 or more spaces.
func splitCells(line string) []string {
	var cells []string
	for _, c := range strings.Split(line, "   ") {
		if c = strings.TrimSpace(c); c != "" {
			cells = append(cells, c)
		}
	}
	return cells
}

func TestEllipsis(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 20, "short"},
		{"exactly twenty chars", 20, "exactly twenty chars"},
		{"twenty-one characters", 20, "twenty-one characte…"},
		{"ééééééééééééééééééééé", 20, "ééééééééééééééééééé…"},
	} {
		if got := ellipsis(tc.in, tc.n); got != tc.want {
			t.Errorf("ellipsis(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
