package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

// env is an environment for lookups.
func env(kv ...string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, e := range kv {
			if k, v, _ := strings.Cut(e, "="); k == name {
				return v, true
			}
		}
		return "", false
	}
}

func TestParseEnvFile(t *testing.T) {
	file := "\xef\xbb\xbfA=1\n" + // a byte order mark
		"# a comment\n" +
		"\n" +
		"   B=two words  \r\n" + // leading space goes, the rest is the value; CRLF too
		"C=\"quoted\"\n" + // quotes are the value's
		"D=x=y\n" +
		"E=\n" +
		"  # an indented comment\n" +
		"HOME_HERE\n" + // from tjob's environment
		"NOT_HERE\n" // unset: left out
	got, err := parseEnvFile(strings.NewReader(file), env("HOME_HERE=/home/me"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=1", "B=two words  ", `C="quoted"`, "D=x=y", "E=", "HOME_HERE=/home/me"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for _, tc := range []struct{ file, err string }{
		{"A=1\n=2\n", "line 2: no variable name"},
		{"A B=1\n", `line 1: variable name "A B" has a space`},
		{"A=\xff\n", "line 1: not UTF-8"},
		{"A=" + strings.Repeat("x", 2<<20) + "\n", "token too long"},
	} {
		if _, err := parseEnvFile(strings.NewReader(tc.file), env()); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%.20q: %v, want %q", tc.file, err, tc.err)
		}
	}
}

func TestRunRequest(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "job.env")
	os.WriteFile(envFile, []byte("FROM_FILE=1\nBOTH=file\nPASSED\n"), 0o644)
	o := runOptions{memory: 64<<20 + 1, cpus: 50, pids: 100, readBPS: 10 << 20, writeBPS: 2 << 20,
		workdir: "/tmp/build/", remove: true, stopTimeout: graceFlag{d: 3 * time.Second, set: true}}
	o.env.listFlag = []string{"BOTH=flag", "PASSED", "UNSET", "EMPTY"}
	o.envFiles = []string{envFile}
	req, err := o.request([]string{"make", "-j", "2"}, env("PASSED=here", "EMPTY="))
	if err != nil {
		t.Fatal(err)
	}
	l := req.GetLimits()
	if req.GetPath() != "make" || !slices.Equal(req.GetArgs(), []string{"-j", "2"}) ||
		l.GetMemoryMb() != 65 || l.GetCpuPercent() != 50 || l.GetPidsMax() != 100 || l.GetReadBps() != 10<<20 || l.GetWriteBps() != 2<<20 ||
		req.GetDir() != "build" || !req.GetRemove() || req.GetGracePeriod().AsDuration() != 3*time.Second {
		t.Errorf("request: %v", req)
	}
	// The files first, then -e, which wins where both set a variable: one
	// value each, the last.
	if want := []string{"FROM_FILE=1", "BOTH=flag", "PASSED=here", "EMPTY="}; !slices.Equal(req.GetEnv(), want) {
		t.Errorf("env %q, want %q", req.GetEnv(), want)
	}

	// Nothing given: zero limits (the server's defaults), no grace period
	// (the server's), no dir (the workspace).
	req, err = (&runOptions{}).request([]string{"true"}, env())
	if err != nil || req.GetGracePeriod() != nil || req.GetDir() != "" || req.GetEnv() != nil ||
		req.GetLimits().GetMemoryMb() != 0 || req.GetLimits().GetCpuPercent() != 0 {
		t.Errorf("no options: %v, %v", req, err)
	}
	// Attached or not, the server removes the job: it outlives tjob.
	if req, _ = (&runOptions{attach: true, remove: true}).request([]string{"true"}, env()); !req.GetRemove() {
		t.Errorf("attached --rm does not ask the server to remove the job")
	}
	missing := filepath.Join(dir, "missing.env")
	if _, err := (&runOptions{envFiles: []string{missing}}).request([]string{"true"}, env()); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing env file: %v", err)
	}
}

func TestWorkspaceDir(t *testing.T) {
	for in, want := range map[string]string{
		"":              "",
		"build":         "build",
		"a/b/":          "a/b/",
		"/tmp":          "",
		"/tmp/":         "",
		"/tmp/build":    "build",
		"/tmp//a/./b":   "a/b",
		"/tmpx":         "/tmpx", // not the workspace: the server says so
		"/etc":          "/etc",
		"/tmp/../etc":   "/tmp/../etc",
		"../up":         "../up",
		"/tmp/a/../../": "/tmp/a/../../",
	} {
		if got := workspaceDir(in); got != want {
			t.Errorf("workspaceDir(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExitCodeOf(t *testing.T) {
	code := func(c int64) *int64 { return &c }
	reason := func(s string) *string { return &s }
	for _, tc := range []struct {
		st   *tjobv1.Status
		want int
	}{
		{&tjobv1.Status{State: tjobv1.State_STATE_EXITED, Exit: code(0)}, 0},
		{&tjobv1.Status{State: tjobv1.State_STATE_EXITED, Exit: code(7)}, 7},
		{&tjobv1.Status{State: tjobv1.State_STATE_EXITED, Exit: code(137), Signal: 9}, 137},
		{&tjobv1.Status{State: tjobv1.State_STATE_EXITED, Exit: code(143), Signal: 15, StopRequested: true}, 143},
		{&tjobv1.Status{State: tjobv1.State_STATE_FAILED, Exit: code(-1), Error: reason(`exec: "nope": executable file not found in $PATH`)}, 127},
		{&tjobv1.Status{State: tjobv1.State_STATE_FAILED, Exit: code(-1), Error: reason("exec /no/such: no such file or directory")}, 127},
		{&tjobv1.Status{State: tjobv1.State_STATE_FAILED, Exit: code(-1), Error: reason("exec /etc/passwd: permission denied")}, 126},
		{&tjobv1.Status{State: tjobv1.State_STATE_FAILED, Exit: code(-1), Error: reason("cgroup: device busy")}, 126},
		// Not the command: the job could not be set up.
		{&tjobv1.Status{State: tjobv1.State_STATE_FAILED, Exit: code(-1), Error: reason("ReadBPS/WriteBPS: stat /tmp/sub: no such file or directory")}, 126},
	} {
		if got := exitCodeOf(tc.st); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.st, got, tc.want)
		}
	}
}
