package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The benchmarks share the machine with whatever else runs on it: the
// report says how busy it was.

// loadavg is the 1-minute load average, and the processes other than the
// harness's that used the most CPU in the last second: the benchmarks
// share the machine with them.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	s := f[0]
	if busy := busiest(time.Second); busy != "" {
		s += " (busiest other processes over 1 s: " + busy + ")"
	}
	return s
}

// busiest names the processes outside the harness that used ≥ 5% of a CPU
// over d.
func busiest(d time.Duration) string {
	before := cpuOfAll()
	time.Sleep(d)
	type busy struct {
		name string
		pct  float64
	}
	var found []busy
	for pid, cpu := range cpuOfAll() {
		if pid == os.Getpid() || before[pid] == 0 {
			continue
		}
		if pct := (cpu - before[pid]) / d.Seconds() * 100; pct >= 5 {
			name, _ := os.ReadFile(procFile(pid, "comm"))
			found = append(found, busy{strings.TrimSpace(string(name)), pct})
		}
	}
	slices.SortFunc(found, func(x, y busy) int { return cmp.Compare(y.pct, x.pct) })
	var parts []string
	for _, b := range found {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", b.name, b.pct))
	}
	return strings.Join(parts, ", ")
}

// cpuOfAll is the CPU time each process has used so far, by pid.
func cpuOfAll() map[int]float64 {
	m := map[int]float64{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		if c, err := cpuSeconds(pid); err == nil {
			m[pid] = c
		}
	}
	return m
}
