package main

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// noEnv is an empty environment: tjob's own defaults.
func noEnv(string) (string, bool) { return "", false }

// FuzzParseArgs: whatever the command line, parseArgs does not panic and
// either prints help (exit 0, on stdout), or prints a usage error (exit 2,
// on stderr), or returns a command to run, quietly, with as many arguments
// as the command takes. What it returns comes from the command line as
// given: `run` takes everything from COMMAND on, verbatim (so `tjob run ls
// -la` runs `ls -la`); the other commands take no word that looks like a
// flag unless it comes after "--"; options are the defaults or what was
// written, run's -e entries among them.
//
//	go test -run '^$' -fuzz '^FuzzParseArgs$' -fuzztime 10s ./tjob
func FuzzParseArgs(f *testing.F) {
	for _, seed := range [][]string{
		{}, {"run", "ls", "-la"}, {"run", "-addr", "h:1", "sh", "-c", "echo $0", "-addr"},
		{"-addr", "h:1", "logs", "1fbb", "-f"}, {"logs", "--", "-f"}, {"run", "--", "-x"},
		{"stop"}, {"stop", "a", "b"}, {"ps", "-a", "-ca=x.crt"}, {"ps", "-x"}, {"help", "logs"},
		{"-h"}, {"logs", "-h"}, {"frob"}, {"run", "-"}, {"logs", "-f=true", "x"}, {"-cert"},
		{"run", "-key", "k", "--", "--"}, {"ps", "--", "-a"}, {"--", "ps"}, {"-", "run"},
		{"run", "-a", "--rm", "--memory", "64m", "--cpus", "0.5", "-e", "A=1", "-e", "--", "sh"},
		{"run", "--pids-limit", "64", "--device-read-bps", "10m", "--device-write-bps=1.5g", "x"},
		{"run", "--env-file", "f", "-w", "/tmp/x", "--stop-timeout", "1m30s", "y"},
		{"run", "--memory", "-1", "x"}, {"run", "--cpus", "0.001", "x"}, {"run", "-e", "=x", "y"},
		{"stop", "-t", "1", "a", "b"}, {"stop", "-t", "--", "a"}, {"ps", "-a", "-q", "--format", "json"},
		{"ps", "--format", "yaml"}, {"ps", "--no-trunc"}, {"rm", "-f", "x"}, {"rm", "x", "--force"},
		{"wait", "x", "y"}, {"inspect", "x"}, {"--version"}, {"version"}, {"-version", "ps", "--", "x"},
		{"version", "x"},
	} {
		f.Add(strings.Join(seed, "\x00"))
	}
	f.Fuzz(func(t *testing.T, line string) {
		// An argv: words cannot hold a NUL, which separates them here.
		var args []string
		if line != "" {
			args = strings.Split(line, "\x00")
		}
		if len(args) > 64 {
			return
		}
		var stdout, stderr bytes.Buffer
		inv, code := parseArgs(slices.Clone(args), noEnv, &stdout, &stderr)
		if inv == nil {
			switch code {
			case exitOK:
				if !strings.Contains(stdout.String(), "Usage: tjob") || stderr.Len() != 0 {
					t.Fatalf("%q: help: stdout %q, stderr %q", args, stdout.String(), stderr.String())
				}
			case exitUsage:
				if !strings.Contains(stderr.String(), "Usage: tjob") || stdout.Len() != 0 {
					t.Fatalf("%q: usage error: stdout %q, stderr %q", args, stdout.String(), stderr.String())
				}
			default:
				t.Fatalf("%q: nothing to run, exit %d", args, code)
			}
			return
		}
		if stdout.Len() != 0 || stderr.Len() != 0 {
			t.Fatalf("%q: wrote %q %q before running", args, stdout.String(), stderr.String())
		}
		if !inv.cmd.nargs(len(inv.args)) {
			t.Fatalf("%q: %s with %d arguments", args, inv.cmd.name, len(inv.args))
		}
		switch {
		case inv.cli.version:
			// -version before the command: tjob's version, whatever follows.
			if inv.cmd != cmdVersion || !slices.ContainsFunc(args[:commandAt(args)], isVersionFlag) {
				t.Fatalf("%q: -version set, running %s", args, inv.cmd.name)
			}
		case inv.cmd.posix:
			if n := len(inv.args); !slices.Equal(args[len(args)-n:], inv.args) {
				t.Fatalf("%q: %s runs %q, not the end of the command line", args, inv.cmd.name, inv.args)
			}
			if c, before := inv.args[0], len(args)-len(inv.args)-1; len(c) > 1 && c[0] == '-' && (before < 0 || args[before] != "--") {
				t.Fatalf("%q: %s runs %q, a flag", args, inv.cmd.name, c)
			}
		default:
			// Everything after the terminator is an argument, flag-like or
			// not; before it, arguments come in order and none is a flag.
			rest := args[commandAt(args)+1:] // what follows the command's name
			before, after := rest, []string(nil)
			if dd := terminator(inv.cmd, rest); dd >= 0 {
				before, after = rest[:dd], rest[dd+1:]
			}
			n := len(inv.args) - len(after)
			if n < 0 || !slices.Equal(inv.args[n:], after) {
				t.Fatalf("%q: %s's arguments %q do not end with those after --", args, inv.cmd.name, inv.args)
			}
			at := 0
			for _, p := range inv.args[:n] {
				i := slices.Index(before[at:], p)
				if i < 0 {
					t.Fatalf("%q: argument %q is not in the command line, in order", args, p)
				}
				at += i + 1
				if len(p) > 1 && p[0] == '-' {
					t.Fatalf("%q: a flag %q taken as an argument", args, p)
				}
			}
		}
		given := func(val string) bool {
			for _, a := range args {
				if a == val || strings.HasSuffix(a, "="+val) {
					return true
				}
			}
			return false
		}
		for _, o := range []struct{ val, def string }{
			{inv.cli.addr, "localhost:8080"}, {inv.cli.ca, ".tjob/ca.crt"}, {inv.cli.cert, ".tjob/cli.crt"}, {inv.cli.key, ".tjob/cli.key"},
		} {
			if o.val != o.def && !given(o.val) {
				t.Fatalf("%q: option value %q comes from nowhere", args, o.val)
			}
		}
		for _, kv := range inv.cli.run.env.listFlag {
			if !given(kv) {
				t.Fatalf("%q: -e %q comes from nowhere", args, kv)
			}
		}
		if o := inv.cli.run; o.memory < 0 || o.cpus < 0 || o.pids < 0 || o.readBPS < 0 || o.writeBPS < 0 || o.stopTimeout.d < 0 || inv.cli.stopTimeout.d < 0 {
			t.Fatalf("%q: a negative limit: %+v", args, o)
		}
		// Parsing is a function of the command line.
		again, code2 := parseArgs(slices.Clone(args), noEnv, &stdout, &stderr)
		if again == nil || code2 != code || again.cmd != inv.cmd || !slices.Equal(again.args, inv.args) || !reflect.DeepEqual(again.cli.options, inv.cli.options) {
			t.Fatalf("%q: parsed twice, differently", args)
		}
	})
}

// takesValue reports whether word is an option of c (nil: one before the
// command) that takes the next word as its value.
func takesValue(c *command, word string) bool {
	name, ok := strings.CutPrefix(word, "-")
	name = strings.TrimPrefix(name, "-")
	if !ok || name == "" || strings.Contains(name, "=") {
		return false
	}
	fs := globalFlags(&cli{})
	if c != nil {
		fs = c.flagSet(&cli{})
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}

func isVersionFlag(w string) bool {
	switch w {
	case "-version", "--version", "-version=true", "--version=true":
		return true
	}
	return false
}

// terminator is the index of the "--" that ends c's flags, or -1: a "--"
// that is the value of an option before it is no terminator.
func terminator(c *command, args []string) int {
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--":
			return i
		case takesValue(c, args[i]):
			i++ // its value
		}
	}
	return -1
}

// commandAt is the index of the command's name: the first word that is
// neither an option nor an option's value, or the word after a "--".
func commandAt(args []string) int {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			return i + 1
		case takesValue(nil, a):
			i++
		case len(a) < 2 || a[0] != '-':
			return i
		}
	}
	return len(args)
}
