//go:build linux

package tjob

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Finding the cgroup file systems: which hierarchies are mounted where, which
// controllers they carry, and where the calling process sits in each. All of
// it comes from /proc/self/mountinfo and /proc/self/cgroup, never from fixed
// paths, so it works with any mount point and inside a cgroup namespace.

// hier is one mounted cgroup hierarchy.
type hier struct {
	version int      // 1 or 2
	mount   string   // where it is mounted
	root    string   // the cgroup shown at the mount point (mountinfo's root), "/" unless bind-mounted
	ctrls   []string // v1: the controllers bound to it; v2: cgroup.controllers at the mount point
	own     string   // the calling process's cgroup in it, as /proc/self/cgroup names it
}

// dir returns the directory of cgroup p (a path as /proc/<pid>/cgroup names
// it) in this hierarchy.
func (h *hier) dir(p string) (string, error) {
	r, err := h.rel(p)
	if err != nil {
		return "", err
	}
	return filepath.Join(h.mount, r), nil
}

// rel returns cgroup p relative to the mount point, with a leading slash: the
// form containerd's cgroups packages take.
func (h *hier) rel(p string) (string, error) {
	p = path.Clean("/" + p)
	if h.root == "/" {
		return p, nil
	}
	if p == h.root {
		return "/", nil
	}
	if r, ok := strings.CutPrefix(p, h.root+"/"); ok {
		return "/" + r, nil
	}
	return "", fmt.Errorf("tjob: cgroup %s is outside the cgroup file system mounted at %s (which shows %s)", p, h.mount, h.root)
}

func (h *hier) has(ctrl string) bool {
	for _, c := range h.ctrls {
		if c == ctrl {
			return true
		}
	}
	return false
}

// cgroupSystem is what this process can use: cgroup v2 or a set of v1
// hierarchies, never a mix.
type cgroupSystem struct {
	v2 *hier            // set when jobs use cgroup v2
	v1 map[string]*hier // by controller, when jobs use cgroup v1
}

// The controllers tjob uses. On v2 these are enabled down to each job's
// cgroup where the kernel offers them; on v1 the job gets a cgroup in each of
// these hierarchies that is mounted (cpuacct for CPU time and freezer for a
// race-free kill, besides the limits').
var (
	v2ControllerNames = []string{"cpu", "memory", "io", "pids"}
	v1Controllers     = []string{"freezer", "cpu", "cpuacct", "memory", "blkio", "pids"}
)

// forceV2 makes jobs use cgroup v2 wherever it is mounted, even with no
// controllers to limit with: tests run the v2 code on hybrid hosts so.
var forceV2 = false

// detectCgroups reads the mounts and this process's cgroups. It prefers the
// version that carries more of the controllers tjob limits with (cpu, memory,
// io/blkio, pids), v2 on a tie: on a hybrid host, where v1 has them all and
// the unified v2 mount none, that is v1.
func detectCgroups() (*cgroupSystem, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	own, err := readProcCgroup("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	v2, v1 := mountedHierarchies(mounts, own)
	return chooseCgroups(v2, v1, own)
}

// mountedHierarchies finds the v2 mount with the most of tjob's
// controllers, and the v1 hierarchy of each of tjob's controllers (one at
// the hierarchy's root where a controller is mounted more than once).
func mountedHierarchies(mounts []mountEntry, own map[string]string) (v2 *hier, v1 map[string]*hier) {
	v1 = map[string]*hier{}
	for _, m := range mounts {
		switch m.fstype {
		case "cgroup2":
			b, err := os.ReadFile(filepath.Join(m.point, "cgroup.controllers"))
			if err != nil {
				continue
			}
			h := &hier{version: 2, mount: m.point, root: m.root, ctrls: strings.Fields(string(b)), own: own[""]}
			if v2 == nil || countOf(h, v2ControllerNames) > countOf(v2, v2ControllerNames) {
				v2 = h
			}
		case "cgroup":
			ctrls := slices.DeleteFunc(slices.Clone(m.super), func(o string) bool { return !slices.Contains(v1Controllers, o) })
			if len(ctrls) == 0 {
				continue // name=systemd, devices, cpuset, ...: not ours
			}
			h := &hier{version: 1, mount: m.point, root: m.root, ctrls: ctrls}
			for _, c := range ctrls {
				h.own = own[c]
				if old := v1[c]; old == nil || (old.root != "/" && h.root == "/") {
					v1[c] = h
				}
			}
		}
	}
	return v2, v1
}

// chooseCgroups picks the version that carries more of the controllers
// tjob limits with, v2 on a tie, and checks that this process has a cgroup
// in it.
func chooseCgroups(v2 *hier, v1 map[string]*hier, own map[string]string) (*cgroupSystem, error) {
	n2 := 0
	if v2 != nil {
		n2 = countOf(v2, v2ControllerNames)
	}
	n1 := 0
	for _, c := range []string{"cpu", "memory", "blkio", "pids"} {
		if v1[c] != nil {
			n1++
		}
	}
	switch {
	case v2 != nil && (forceV2 || n2 > 0 && n2 >= n1):
		if _, ok := own[""]; !ok {
			return nil, errors.New("tjob: /proc/self/cgroup has no cgroup v2 entry")
		}
		return &cgroupSystem{v2: v2}, nil
	case n1 > 0:
		for c, h := range v1 {
			if _, ok := own[c]; !ok {
				return nil, fmt.Errorf("tjob: /proc/self/cgroup has no entry for the %s controller", c)
			}
			if _, err := h.rel(h.own); err != nil {
				return nil, err
			}
		}
		return &cgroupSystem{v1: v1}, nil
	}
	return nil, errors.New("tjob: no cgroup file system with the cpu, memory, io or pids controller is mounted (see /proc/self/mountinfo); set NoCgroup to run jobs without limits")
}

func countOf(h *hier, ctrls []string) int {
	n := 0
	for _, c := range ctrls {
		if h.has(c) {
			n++
		}
	}
	return n
}

// hierarchies lists the distinct hierarchies in use, v1's in the order of
// v1Controllers (freezer first, so that the jail joins it first).
func (s *cgroupSystem) hierarchies() []*hier {
	if s.v2 != nil {
		return []*hier{s.v2}
	}
	var hs []*hier
	seen := map[*hier]bool{}
	for _, c := range v1Controllers {
		if h := s.v1[c]; h != nil && !seen[h] {
			seen[h] = true
			hs = append(hs, h)
		}
	}
	return hs
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dev    string // "major:minor" of the mounted file system
	root   string
	point  string
	fstype string
	source string
	super  []string // super options
}

func readMountinfo() ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("tjob: reading mounts: %w", err)
	}
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || len(f) < sep+3 {
			continue
		}
		out = append(out, mountEntry{
			dev:    f[2],
			root:   unescapeMount(f[3]),
			point:  unescapeMount(f[4]),
			fstype: f[sep+1],
			source: unescapeMount(f[sep+2]),
			super:  strings.Split(f[len(f)-1], ","),
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readProcCgroup maps each v1 controller (and "" for v2) to the process's
// cgroup in it.
func readProcCgroup(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tjob: reading cgroups: %w", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		// "4:memory:/a/b", "2:cpu,cpuacct:/", "0::/user.slice"
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if ctrls == "" {
			out[""] = p
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			out[c] = p
		}
	}
	return out, nil
}
