package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestWritePS(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }
	exit := func(c int64) *int64 { return &c }
	msg := "exec: \"nope\": executable file not found in $PATH"
	jobs := []*tjobv1.Status{
		{JobId: "1abb6e8a-788c-45bf-9996-1b45bb6a99d0", Cmd: "sleep 1000", Args: []string{"sleep", "1000"}, State: tjobv1.State_STATE_RUNNING,
			Started: at(3 * time.Second), ElapsedSecs: 3.2},
		{JobId: "1fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "echo a b c", Args: []string{"echo", "a b", "c"}, State: tjobv1.State_STATE_EXITED,
			Started: at(70 * time.Second), Stopped: at(69 * time.Second), Exit: exit(0)},
		{JobId: "2fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "stress --vm 1 --vm-bytes 1G", Args: strings.Fields("stress --vm 1 --vm-bytes 1G"), State: tjobv1.State_STATE_EXITED,
			Started: at(3 * time.Hour), Stopped: at(2 * time.Hour), Exit: exit(137), Signal: 9, OomKilled: true},
		{JobId: "3fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "nope", Args: []string{"nope"}, State: tjobv1.State_STATE_FAILED,
			Started: at(time.Minute), Stopped: at(time.Minute), Exit: exit(-1), Error: &msg},
		{JobId: "4fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "sleep 999", Args: []string{"sleep", "999"}, State: tjobv1.State_STATE_EXITED,
			Started: at(5 * time.Second), Stopped: at(2 * time.Second), Exit: exit(143), Signal: 15, StopRequested: true},
		// A status without args (as the cmd of an older server): its cmd.
		{JobId: "5fcc4f8b-788c-45bf-9996-1b45bb6a99d0", Cmd: "true", State: tjobv1.State_STATE_EXITED,
			Started: at(5 * time.Second), Stopped: at(5 * time.Second), Exit: exit(0)},
	}
	var b bytes.Buffer
	if err := writePS(&b, jobs, now, true); err != nil {
		t.Fatal(err)
	}
	checkTable(t, b.String(), `JOB ID     COMMAND                  CREATED          STATUS
1abb6e8a   "sleep 1000"             3 seconds ago    Up 3 seconds
1fcc4f8b   "echo 'a b' c"           About a minute ago   Exited (0) About a minute ago
2fcc4f8b   "stress --vm 1 --vm-…"   3 hours ago      Exited (137) 2 hours ago (out of memory)
3fcc4f8b   "nope"                   About a minute ago   Failed to start: exec: "nope": executable file not found…
4fcc4f8b   "sleep 999"              5 seconds ago    Exited (143) 2 seconds ago (stopped)
5fcc4f8b   "true"                   5 seconds ago    Exited (0) 5 seconds ago
`)

	// --no-trunc: whole IDs, commands and errors.
	b.Reset()
	if err := writePS(&b, jobs[2:4], now, false); err != nil {
		t.Fatal(err)
	}
	checkTable(t, b.String(), `JOB ID     COMMAND                  CREATED          STATUS
2fcc4f8b-788c-45bf-9996-1b45bb6a99d0   "stress --vm 1 --vm-bytes 1G"   3 hours ago      Exited (137) 2 hours ago (out of memory)
3fcc4f8b-788c-45bf-9996-1b45bb6a99d0   "nope"   About a minute ago   Failed to start: exec: "nope": executable file not found in $PATH
`)
}

// checkTable compares a table with want cell by cell: the widths are
// tabwriter's business.
func checkTable(t *testing.T, got, want string) {
	t.Helper()
	lines := strings.Split(got, "\n")
	for i, line := range strings.Split(want, "\n") {
		if i >= len(lines) {
			t.Fatalf("missing line %d: %q\n%s", i, line, got)
		}
		wf, gf := splitCells(line), splitCells(lines[i])
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

var shellCases = []struct {
	args []string
	want string
}{
	{[]string{"echo", "a b", "c"}, `echo 'a b' c`},
	{[]string{"sleep", "1000"}, `sleep 1000`},
	{[]string{"sh", "-c", `echo "$HOME"; exit 7`}, `sh -c 'echo "$HOME"; exit 7'`},
	{[]string{"echo", "it's"}, `echo 'it'\''s'`},
	{[]string{"echo", ""}, `echo ''`},
	{[]string{"ls", "-la", "/tmp/x_y.z", "a=b,c:d@e%f+g"}, `ls -la /tmp/x_y.z a=b,c:d@e%f+g`},
	{[]string{"echo", "~", "*", "?", "[a]", "{a,b}", "a\tb", "a\nb", "é", "!", "#"},
		"echo '~' '*' '?' '[a]' '{a,b}' 'a\tb' 'a\nb' 'é' '!' '#'"},
}

func TestShellJoin(t *testing.T) {
	for _, tc := range shellCases {
		if got := shellJoin(tc.args); got != tc.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}

// TestShellJoinRoundTrip: a POSIX shell splits what shellJoin writes back
// into the words it was given.
func TestShellJoinRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this machine")
	}
	for _, tc := range shellCases {
		out, err := exec.Command(sh, "-c", `printf '%s\0' `+shellJoin(tc.args)).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); !slices.Equal(got, tc.args) {
			t.Errorf("sh split %s into %q, want %q", shellJoin(tc.args), got, tc.args)
		}
	}
}

// TestWriteJSON: valid JSON arrays for none, one and many jobs, with the
// proto's field names and every field.
func TestWriteJSON(t *testing.T) {
	exit := int64(7)
	jobs := []*tjobv1.Status{
		{JobId: "1abb", Args: []string{"echo", "a b", `"c"`}, Exit: &exit, State: tjobv1.State_STATE_EXITED,
			GracePeriod: durationpb.New(1500 * time.Millisecond), Limits: &tjobv1.Limits{MemoryMb: 64, CpuPercent: 50}},
		{JobId: "2abb", State: tjobv1.State_STATE_RUNNING},
	}
	for n := range len(jobs) + 1 {
		var b bytes.Buffer
		if err := writeJSON(&b, jobs[:n]); err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		if err := json.Unmarshal(b.Bytes(), &got); err != nil || len(got) != n {
			t.Fatalf("%d jobs: %v, %d objects:\n%s", n, err, len(got), b.String())
		}
		if n == 0 {
			if b.String() != "[]\n" {
				t.Errorf("no jobs: %q", b.String())
			}
			continue
		}
		first := got[0]
		if first["job_id"] != "1abb" || first["exit"] != "7" || first["state"] != "STATE_EXITED" || first["grace_period"] != "1.500s" {
			t.Errorf("first job: %v", first)
		}
		if args, _ := first["args"].([]any); len(args) != 3 || args[1] != "a b" || args[2] != `"c"` {
			t.Errorf("args: %v", first["args"])
		}
		if limits, _ := first["limits"].(map[string]any); limits["memory_mb"] != "64" || limits["cpu_percent"] != 50.0 || limits["pids_max"] != 0.0 {
			t.Errorf("limits: %v", first["limits"])
		}
		// Every field, set or not: a zero is there to read.
		for _, f := range []string{"oom_killed", "signal", "stop_requested", "env", "dir", "output_bytes", "remove"} {
			if _, ok := first[f]; !ok {
				t.Errorf("no %s in %v", f, first)
			}
		}
	}
}
