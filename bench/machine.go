package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// machine describes what the figures were measured on, as the report's
// first table.
func (e *env) machine() [][2]string {
	var m [][2]string
	add := func(k, v string) { m = append(m, [2]string{k, v}) }
	add("CPUs (nproc)", fmt.Sprint(runtime.NumCPU()))
	if kib, err := procKiB("/proc/meminfo", "MemTotal"); err == nil {
		add("memory", fmt.Sprintf("%.1f GiB", kib/(1<<20)))
	}
	add("CPU model", cpuModel())
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		add("kernel", fmt.Sprintf("%s %s %s", cstr(u.Sysname[:]), cstr(u.Release[:]), cstr(u.Machine[:])))
	}
	add("cgroups", cgroupMode())
	add("Go", runtime.Version())
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				add("OS", strings.Trim(v, `"`))
			}
		}
	}
	add("root", yesNo(e.root))
	add("tree", treeState(e.repo))
	var tools []string
	for _, t := range []string{"unshare", "bwrap", "runc", "busybox", "perf"} {
		if p, err := exec.LookPath(t); err == nil {
			tools = append(tools, t+" "+toolVersion(t, p))
		} else {
			tools = append(tools, t+" (missing)")
		}
	}
	add("tools", strings.Join(tools, "; "))
	return m
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func cpuModel() string {
	cpu, err := procFields("/proc/cpuinfo")
	if err != nil || cpu["model name"] == "" {
		return "?"
	}
	return cpu["model name"]
}

// cgroupMode tells v2, v1 and hybrid apart from the mounts.
func cgroupMode() string {
	ms, err := mounts()
	if err != nil {
		return "?"
	}
	var v1 []string
	v2 := ""
	for _, m := range ms {
		switch m.fstype {
		case "cgroup2":
			v2 = m.point
		case "cgroup":
			v1 = append(v1, filepath.Base(m.point))
		}
	}
	switch {
	case len(v1) > 0 && v2 != "":
		ctrls, _ := os.ReadFile(filepath.Join(v2, "cgroup.controllers"))
		c := strings.TrimSpace(string(ctrls))
		if c == "" {
			c = "none"
		}
		return fmt.Sprintf("hybrid: v1 hierarchies %s; v2 at %s with controllers: %s", strings.Join(v1, ","), v2, c)
	case len(v1) > 0:
		return "v1: " + strings.Join(v1, ",")
	case v2 != "":
		return "v2 at " + v2
	}
	return "none mounted"
}

// treeState names the commit measured, and the files that differed from it.
func treeState(repo string) string {
	head, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "?"
	}
	st, _ := exec.Command("git", "-C", repo, "status", "--porcelain").Output()
	var mod, untracked []string
	for _, l := range strings.Split(string(st), "\n") {
		if len(l) < 4 {
			continue
		}
		if strings.HasPrefix(l, "??") {
			untracked = append(untracked, strings.TrimSpace(l[3:]))
		} else {
			mod = append(mod, strings.TrimSpace(l[3:]))
		}
	}
	s := "commit " + strings.TrimSpace(string(head))
	if len(mod)+len(untracked) > 0 {
		s += " with the working tree as it was (work in progress):"
		if len(mod) > 0 {
			s += " modified " + strings.Join(mod, " ")
		}
		if len(untracked) > 0 {
			s += "; untracked " + strings.Join(untracked, " ")
		}
	}
	return s
}

// toolVersion is the first line a tool prints about its version, without
// the tool's name.
func toolVersion(name, path string) string {
	var out []byte
	switch name {
	case "busybox":
		out, _ = exec.Command(path).Output()
	case "perf":
		out, _ = exec.Command(path, "version").Output()
	default:
		out, _ = exec.Command(path, "--version").CombinedOutput()
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	first = strings.TrimSpace(first)
	for _, p := range []string{"unshare from ", "bubblewrap ", "runc version ", "perf version "} {
		first = strings.TrimPrefix(first, p)
	}
	if len(first) > 40 {
		first = first[:40]
	}
	return first
}
