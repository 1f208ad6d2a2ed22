package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the user and system CPU time that process pid (all its
// threads, living and dead) has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return float64(ut+st) / clockTicks, nil
}

// statusKB reads fields of /proc/PID/status that are in kB (VmRSS, VmHWM).
func statusKB(pid int, keys ...string) (map[string]float64, error) {
	return kbFields(fmt.Sprintf("/proc/%d/status", pid), keys...)
}

// smapsKB reads fields of /proc/PID/smaps_rollup (Pss, Private_Dirty...).
func smapsKB(pid int, keys ...string) (map[string]float64, error) {
	return kbFields(fmt.Sprintf("/proc/%d/smaps_rollup", pid), keys...)
}

func kbFields(file string, keys ...string) (map[string]float64, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !want[k] {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			continue
		}
		out[k] += n
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return out, fmt.Errorf("%s: no %s", file, k)
		}
	}
	return out, sc.Err()
}

// rssMiB is the resident set of pid now, in MiB.
func rssMiB(pid int) (float64, error) {
	m, err := statusKB(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return m["VmRSS"] / 1024, nil
}

// resetPeakRSS resets VmHWM of pid to its current RSS (proc(5),
// clear_refs "5").
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// children lists the child processes of pid, over all its threads.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// argv0 is the first word of pid's command line.
func argv0(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	a, _, _ := bytes.Cut(b, []byte{0})
	return string(a)
}

// cgroupOf is /proc/PID/cgroup, one string.
func cgroupOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return strings.TrimSpace(string(b))
}

// cgroupDiff says which hierarchies' cgroups differ between two
// /proc/PID/cgroup contents: the controllers a job got a cgroup of its own in.
func cgroupDiff(a, b string) []string {
	parse := func(s string) map[string]string {
		m := map[string]string{}
		for _, l := range strings.Split(s, "\n") {
			parts := strings.SplitN(l, ":", 3)
			if len(parts) == 3 {
				k := parts[1]
				if k == "" {
					k = "unified"
				}
				m[k] = parts[2]
			}
		}
		return m
	}
	ma, mb := parse(a), parse(b)
	var diff []string
	for k, v := range ma {
		if mb[k] != v {
			diff = append(diff, k)
		}
	}
	return diff
}

func jailInitsOf(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		if argv0(c) == "tjob-jail-init" {
			out = append(out, c)
		}
	}
	return out
}
