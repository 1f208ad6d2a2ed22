package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/neildo/tjob/internal/jobinit"
)

// What the harness reads of /proc: each format has one parser here.

// procFile is the path of a process's file in /proc.
func procFile(pid int, name string) string {
	return fmt.Sprintf("/proc/%d/%s", pid, name)
}

// procFields reads a file of "Key: value" lines: /proc/PID/status,
// /proc/PID/smaps_rollup, /proc/meminfo, /proc/cpuinfo. A key that repeats
// (cpuinfo has a block a CPU) keeps its first value.
func procFields(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		k = strings.TrimSpace(k)
		if _, seen := fields[k]; ok && !seen {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields, nil
}

// procKiB reads one field of such a file whose value is in kB ("VmRSS: 1234 kB").
func procKiB(file, key string) (float64, error) {
	fields, err := procFields(file)
	if err != nil {
		return 0, err
	}
	v, ok := kib(fields, key)
	if !ok {
		return 0, fmt.Errorf("%s: no %s", file, key)
	}
	return v, nil
}

// kib is the number in a field of procFields that is in kB.
func kib(fields map[string]string, key string) (float64, bool) {
	n, _, _ := strings.Cut(fields[key], " ")
	v, err := strconv.ParseFloat(n, 64)
	return v, err == nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the user and system CPU time that process pid (all its
// threads, living and dead) has used.
func cpuSeconds(pid int) (float64, error) {
	file := procFile(pid, "stat")
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no ')'", file)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: short", file)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: bad utime or stime", file)
	}
	return float64(ut+st) / clockTicks, nil
}

// threadsCPU is the CPU time that the living threads of process pid have
// used, in nanoseconds (the first field of each /proc/PID/task/TID/schedstat):
// finer than cpuSeconds's clock ticks, but blind to threads that have
// exited, so callers check it against cpuSeconds.
func threadsCPU(pid int) (float64, error) {
	dir := procFile(pid, "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var ns uint64
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name(), "schedstat"))
		if err != nil {
			continue // the thread has exited
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return 0, fmt.Errorf("%s/%s/schedstat: empty", dir, ent.Name())
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, ent.Name(), err)
		}
		ns += v
	}
	return float64(ns) / 1e9, nil
}

// serverCPU reads pid's CPU time both ways, for cpuDelta.
type serverCPU struct{ ticks, threads float64 }

func readServerCPU(pid int) (serverCPU, error) {
	t, err := cpuSeconds(pid)
	if err != nil {
		return serverCPU{}, err
	}
	th, err := threadsCPU(pid)
	if err != nil {
		return serverCPU{}, err
	}
	return serverCPU{ticks: t, threads: th}, nil
}

// cpuDelta is the CPU time pid used between two readings: its threads' run
// time to the nanosecond, unless it differs from the clock-tick figure by
// more than two ticks (a thread ended in between), then the tick figure.
func cpuDelta(a, b serverCPU) float64 {
	fine, coarse := b.threads-a.threads, b.ticks-a.ticks
	if math.Abs(fine-coarse) > 2.0/clockTicks {
		return coarse
	}
	return fine
}

// rssMiB is the resident set of pid now, in MiB.
func rssMiB(pid int) (float64, error) {
	v, err := procKiB(procFile(pid, "status"), "VmRSS")
	return v / 1024, err
}

// peakRSSMiB is the largest resident set of pid since it started or since
// resetPeakRSS, in MiB.
func peakRSSMiB(pid int) (float64, error) {
	v, err := procKiB(procFile(pid, "status"), "VmHWM")
	return v / 1024, err
}

// resetPeakRSS resets VmHWM of pid to its current RSS (proc(5),
// clear_refs "5").
func resetPeakRSS(pid int) error {
	return os.WriteFile(procFile(pid, "clear_refs"), []byte("5"), 0)
}

// memory is what a process holds, in KiB.
type memory struct {
	rss     float64 // resident
	pss     float64 // resident, with each shared page split among its sharers
	private float64 // resident and not shared: Private_Clean + Private_Dirty
}

func memoryOf(pid int) (memory, error) {
	rss, err := procKiB(procFile(pid, "status"), "VmRSS")
	if err != nil {
		return memory{}, err
	}
	smaps, err := procFields(procFile(pid, "smaps_rollup"))
	if err != nil {
		return memory{}, err
	}
	pss, _ := kib(smaps, "Pss")
	clean, _ := kib(smaps, "Private_Clean")
	dirty, _ := kib(smaps, "Private_Dirty")
	return memory{rss: rss, pss: pss, private: clean + dirty}, nil
}

// children lists the child processes of pid, over all its threads.
func children(pid int) []int {
	tasks, _ := filepath.Glob(procFile(pid, "task/*/children"))
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

// jailInits lists the children of pid that are a job's init: the library
// starts it with argv[0] jobinit.Arg0.
func jailInits(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		cmdline, _ := os.ReadFile(procFile(c, "cmdline"))
		if arg0, _, _ := bytes.Cut(cmdline, []byte{0}); string(arg0) == jobinit.Arg0 {
			out = append(out, c)
		}
	}
	return out
}

// cgroupsOf maps each hierarchy ("unified" for v2, else its v1 controllers)
// to pid's cgroup in it, from /proc/PID/cgroup.
func cgroupsOf(pid int) map[string]string {
	b, _ := os.ReadFile(procFile(pid, "cgroup"))
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		// "4:memory:/a/b", "0::/user.slice"
		parts := strings.SplitN(line, ":", 3)
		if len(parts) < 3 {
			continue
		}
		if parts[1] == "" {
			parts[1] = "unified"
		}
		m[parts[1]] = parts[2]
	}
	return m
}

// ownCgroups lists the hierarchies in which pid has a cgroup other than
// parent's: those the job got a cgroup of its own in.
func ownCgroups(pid, parent int) []string {
	mine, theirs := cgroupsOf(pid), cgroupsOf(parent)
	var own []string
	for h, cg := range mine {
		if theirs[h] != cg {
			own = append(own, h)
		}
	}
	return own
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	point   string   // where it is mounted
	flags   []string // the mount's own options: "rw", "nosuid", "relatime", ...
	fstype  string   // "cgroup", "cgroup2", "ext4", ...
	options []string // the file system's own (super) options
}

func mounts() ([]mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, line := range strings.Split(string(b), "\n") {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 3 {
			continue
		}
		out = append(out, mount{point: f[4], flags: strings.Split(f[5], ","), fstype: g[0], options: strings.Split(g[2], ",")})
	}
	return out, nil
}
