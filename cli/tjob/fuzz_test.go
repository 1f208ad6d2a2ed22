package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// FuzzParseArgs: whatever the command line, parseArgs does not panic and
// either prints help (exit 0, on stdout), or prints a usage error (exit 2,
// on stderr), or returns a command to run, quietly, with as many arguments
// as the command takes. What it returns comes from the command line as
// given: `run` takes everything from COMMAND on, verbatim (so `tjob run ls
// -la` runs `ls -la`); the other commands take no word that looks like a
// flag unless it comes after "--"; options are the defaults or what was
// written.
//
//	go test -run '^$' -fuzz '^FuzzParseArgs$' -fuzztime 10s ./tjob
func FuzzParseArgs(f *testing.F) {
	for _, seed := range [][]string{
		{}, {"run", "ls", "-la"}, {"run", "-addr", "h:1", "sh", "-c", "echo $0", "-addr"},
		{"-addr", "h:1", "logs", "1fbb", "-f"}, {"logs", "--", "-f"}, {"run", "--", "-x"},
		{"stop"}, {"stop", "a", "b"}, {"ps", "-a", "-ca=x.crt"}, {"ps", "-x"}, {"help", "logs"},
		{"-h"}, {"logs", "-h"}, {"frob"}, {"run", "-"}, {"logs", "-f=true", "x"}, {"-cert"},
		{"run", "-key", "k", "--", "--"}, {"ps", "--", "-a"}, {"--", "ps"}, {"-", "run"},
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
		inv, code := parseArgs(slices.Clone(args), &stdout, &stderr)
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
		if inv.cmd.posix {
			if n := len(inv.args); !slices.Equal(args[len(args)-n:], inv.args) {
				t.Fatalf("%q: %s runs %q, not the end of the command line", args, inv.cmd.name, inv.args)
			}
			if c, before := inv.args[0], len(args)-len(inv.args)-1; len(c) > 1 && c[0] == '-' && (before < 0 || args[before] != "--") {
				t.Fatalf("%q: %s runs %q, a flag", args, inv.cmd.name, c)
			}
		} else {
			// Everything after the terminator is an argument, flag-like or
			// not; before it, arguments come in order and none is a flag.
			rest := args[commandAt(args)+1:] // what follows the command's name
			before, after := rest, []string(nil)
			if dd := terminator(rest); dd >= 0 {
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
		for _, o := range []struct{ val, def string }{
			{inv.cli.addr, "localhost:8080"}, {inv.cli.ca, ".tjob/ca.crt"}, {inv.cli.cert, ".tjob/cli.crt"}, {inv.cli.key, ".tjob/cli.key"},
		} {
			if o.val == o.def {
				continue
			}
			given := false
			for _, a := range args {
				given = given || a == o.val || strings.HasSuffix(a, "="+o.val)
			}
			if !given {
				t.Fatalf("%q: option value %q comes from nowhere", args, o.val)
			}
		}
		// Parsing is a function of the command line.
		again, code2 := parseArgs(slices.Clone(args), &stdout, &stderr)
		if again == nil || code2 != code || again.cmd != inv.cmd || !slices.Equal(again.args, inv.args) || *again.cli != *inv.cli {
			t.Fatalf("%q: parsed twice, differently", args)
		}
	})
}

// terminator is the index of the "--" that ends the flags, or -1: a "--"
// that is the value of an option before it is no terminator.
func terminator(args []string) int {
	for i := 0; i < len(args); i++ {
		switch strings.TrimPrefix(args[i], "-") {
		case "-":
			return i
		case "addr", "-addr", "ca", "-ca", "cert", "-cert", "key", "-key":
			i++ // its value
		}
	}
	return -1
}

// commandAt is the index of the command's name: the first word that is
// neither an option nor an option's value, or the word after a "--".
func commandAt(args []string) int {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; strings.TrimPrefix(a, "-") {
		case "-":
			return i + 1
		case "addr", "-addr", "ca", "-ca", "cert", "-cert", "key", "-key":
			i++
		default:
			if len(a) < 2 || a[0] != '-' {
				return i
			}
		}
	}
	return len(args)
}
