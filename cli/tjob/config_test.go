package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

// TestEnvironment: TJOB_ADDR, TJOB_CERT_PATH and TJOB_USER set the
// defaults; flags win; an error that names a file or address says how to
// change it.
func TestEnvironment(t *testing.T) {
	parsed := func(lookup func(string) (string, bool), args ...string) *cli {
		t.Helper()
		var stdout, stderr bytes.Buffer
		inv, code := parseArgs(args, lookup, &stdout, &stderr)
		if inv == nil {
			t.Fatalf("%q: exit %d: %s", args, code, stderr.String())
		}
		return inv.cli
	}
	c := parsed(env(), "ps")
	if c.addr != "localhost:8080" || c.ca != ".tjob/ca.crt" || c.cert != ".tjob/cli.crt" || c.key != ".tjob/cli.key" {
		t.Errorf("defaults: %+v", c.options)
	}
	bob := env("TJOB_ADDR=h:1", "TJOB_CERT_PATH=/etc/tjob", "TJOB_USER=bob")
	c = parsed(bob, "ps")
	if c.addr != "h:1" || c.ca != "/etc/tjob/ca.crt" || c.cert != "/etc/tjob/bob.crt" || c.key != "/etc/tjob/bob.key" {
		t.Errorf("from the environment: %+v", c.options)
	}
	for _, tc := range []struct{ flag, hint string }{
		{"addr", "set -addr or TJOB_ADDR"},
		{"ca", "set -ca or TJOB_CERT_PATH"},
		{"cert", "set -cert, TJOB_CERT_PATH or TJOB_USER"},
		{"key", "set -key, TJOB_CERT_PATH or TJOB_USER"},
	} {
		if got := c.origin(tc.flag); got != tc.hint {
			t.Errorf("origin(%s) = %q, want %q", tc.flag, got, tc.hint)
		}
	}
	c = parsed(bob, "-addr", "h:2", "ps", "-cert", "x.crt")
	if c.addr != "h:2" || c.cert != "x.crt" || c.key != "/etc/tjob/bob.key" {
		t.Errorf("flags over the environment: %+v", c.options)
	}
	if c.origin("addr") != "given with -addr" || c.origin("cert") != "given with -cert" || c.origin("key") != "set -key, TJOB_CERT_PATH or TJOB_USER" {
		t.Errorf("origins: %q %q %q", c.origin("addr"), c.origin("cert"), c.origin("key"))
	}

	// The files do not exist: each error names the file and what sets it.
	_, err := parsed(env("TJOB_CERT_PATH="+t.TempDir()), "ps").tlsConfig()
	if err == nil || !strings.Contains(err.Error(), "ca.crt does not exist (set -ca or TJOB_CERT_PATH, or make certificates with 'tjobs certs')") {
		t.Errorf("missing CA: %v", err)
	}
	_, err = parsed(env(), "ps", "-ca", "/dev/null", "-cert", "nope.crt").tlsConfig()
	if err == nil || !strings.Contains(err.Error(), "nope.crt does not exist (given with -cert") {
		t.Errorf("missing certificate: %v", err)
	}

	var stdout, stderr bytes.Buffer
	if inv, code := parseArgs([]string{"ps"}, env("TJOB_USER=../x"), &stdout, &stderr); inv != nil || code != exitUsage || !strings.Contains(stderr.String(), "TJOB_USER") {
		t.Errorf("TJOB_USER=../x: exit %d, %q", code, stderr.String())
	}
}

func TestVersion(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "f167734c"}, {Key: "vcs.modified", Value: "true"},
	}}
	if got := versionOf(info); got != "tjob v1.2.3 commit f167734c (modified) go1.26.8" {
		t.Errorf("versionOf: %q", got)
	}
	info.Settings = info.Settings[:2]
	if got := versionOf(info); got != "tjob v1.2.3 commit f167734c go1.26.8" {
		t.Errorf("versionOf, clean: %q", got)
	}
	info.Settings = nil
	if got := versionOf(info); got != "tjob v1.2.3 (commit not recorded) go1.26.8" {
		t.Errorf("versionOf, no commit: %q", got)
	}
	if got := versionOf(nil); got != "tjob (no build information)" {
		t.Errorf("versionOf(nil): %q", got)
	}
	for _, args := range [][]string{{"--version"}, {"version"}, {"-version", "ps", "-x"}} {
		var stdout, stderr bytes.Buffer
		if code := tjobMain(args, env(), &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "tjob ") || stderr.Len() != 0 {
			t.Errorf("%q: exit %d, %q %q", args, code, stdout.String(), stderr.String())
		}
	}
}

// TestFailureStatus: a command that fails exits 1, and an attached run 125,
// whose lower statuses are the job's; either way with one line that says
// why.
func TestFailureStatus(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"run", "-ca", "missing.crt", "true"}, exitFailed},
		{[]string{"run", "-a", "-ca", "missing.crt", "true"}, exitTjobFailed},
		{[]string{"ps", "-ca", "missing.crt"}, exitFailed},
	} {
		var stdout, stderr bytes.Buffer
		code := tjobMain(tc.args, env(), &stdout, &stderr)
		if code != tc.code || stdout.Len() != 0 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "missing.crt does not exist") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d", tc.args, code, stdout.String(), stderr.String(), tc.code)
		}
	}
}
