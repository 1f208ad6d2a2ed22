package main

import (
	"testing"
	"time"
)

func TestSizeFlag(t *testing.T) {
	for _, tc := range []struct {
		in    string
		bytes int64
		mib   int64
	}{
		{"64m", 64 << 20, 64},
		{"64M", 64 << 20, 64},
		{"64mb", 64 << 20, 64},
		{"1g", 1 << 30, 1024},
		{"1.5g", 3 << 29, 1536},
		{"512k", 512 << 10, 1}, // rounded up: not 0, which asks for the default
		{"1", 1, 1},
		{"1048577", 1<<20 + 1, 2},
		{"0", 0, 0},
	} {
		var f sizeFlag
		if err := f.Set(tc.in); err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if int64(f) != tc.bytes || f.mebibytes() != tc.mib {
			t.Errorf("%q: %d bytes, %d MiB; want %d, %d", tc.in, f, f.mebibytes(), tc.bytes, tc.mib)
		}
	}
	for _, bad := range []string{"", "-1", "-64m", "64x", "m", "ten"} {
		var f sizeFlag
		if err := f.Set(bad); err == nil {
			t.Errorf("%q taken as %d bytes", bad, f)
		}
	}
}

func TestCPUsFlag(t *testing.T) {
	for in, want := range map[string]int32{"0.5": 50, "1": 100, "2.5": 250, ".25": 25, "0.01": 1, "0.333": 33, "0.005": 1, "0": 0} {
		var f cpusFlag
		if err := f.Set(in); err != nil || int32(f) != want {
			t.Errorf("--cpus %s: %d percent, %v; want %d", in, f, err, want)
		}
	}
	for _, bad := range []string{"", "-0.5", "half", "NaN", "Inf", "0.004", "1e9", "0x10"} {
		var f cpusFlag
		if err := f.Set(bad); err == nil {
			t.Errorf("--cpus %q taken as %d percent", bad, f)
		}
	}
}

func TestCountFlag(t *testing.T) {
	var f countFlag
	if err := f.Set("64"); err != nil || f != 64 {
		t.Errorf("64: %d, %v", f, err)
	}
	for _, bad := range []string{"-1", "1.5", "", "4294967296"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("%q taken as %d", bad, f)
		}
	}
}

func TestGraceFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "0": 0, "1m30s": 90 * time.Second, "1.5s": 1500 * time.Millisecond, "250ms": 250 * time.Millisecond} {
		var f graceFlag
		if err := f.Set(in); err != nil || f.d != want || !f.set {
			t.Errorf("%q: %v (set %v), %v; want %v", in, f.d, f.set, err, want)
		}
	}
	for _, bad := range []string{"-1", "-1s", "soon", "", "1.5"} {
		var f graceFlag
		if err := f.Set(bad); err == nil || f.set {
			t.Errorf("%q taken as %v", bad, f.d)
		}
	}
}

func TestEnvAndFormatFlags(t *testing.T) {
	var e envFlag
	for _, ok := range []string{"A=1", "B=", "C", "D=x=y", "E= spaced "} {
		if err := e.Set(ok); err != nil {
			t.Errorf("-e %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "=1", "A B=1"} {
		if err := e.Set(bad); err == nil {
			t.Errorf("-e %q taken", bad)
		}
	}
	if len(e.listFlag) != 5 {
		t.Errorf("-e kept %q", e.listFlag)
	}
	var f formatFlag
	if f.Set("json") != nil || f.Set("table") != nil || f.Set("{{.ID}}") == nil {
		t.Errorf("--format: json and table only")
	}
}
