//go:build linux

package tjob

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// cgroup v2: one unified hierarchy. containerd's cgroup2 package writes the
// limits (Manager.Update) and reads the usage (Manager.StatFiltered). The
// rest is written here, because the package does not fit:
//
//   - enabling controllers: Manager.ToggleControllers writes every ancestor
//     up to the file system's root (a supervisor's cgroups, not ours) and
//     cannot move the caller out of the way of the no-internal-processes
//     rule;
//   - killing: Manager.Kill logs a warning through logrus when it falls back
//     (kernels before 5.14), and its freeze loop has no bound;
//   - removing: Manager.Delete retries any error, with os.RemoveAll; a
//     cgroup is removed with rmdir, and only EBUSY (processes still exiting)
//     is worth a retry.
//
// The package logs (logrus, on stderr) only when a kernel file does not
// parse, which the kernel does not do.

// cgroupV2 is a job's cgroup on cgroup v2.
type cgroupV2 struct {
	name     string // as /proc/<pid>/cgroup shows it
	dir      string
	ownerDir string
	mgr      *cgroup2.Manager
	into     *os.File
	cpu      int // CPUPercent, set by LimitCPU

	removal
}

func newCgroupV2(spec cgroupSpec, h *hier, owner string) (_ *cgroupV2, err error) {
	base := baseOf(h)
	parent := parentOf(h, spec.parent)
	ownerCg := path.Join(parent, owner)
	start, err := v2Start(h, base, parent)
	if err != nil {
		return nil, err
	}
	need := controllersNeeded(spec.limits, "io")
	want, err := v2Controllers(h, start, need)
	if err != nil {
		return nil, err
	}
	if want, err = enableDown(h, start, base, parent, ownerCg, want, need); err != nil {
		return nil, err
	}
	name := path.Join(ownerCg, spec.id)
	c := &cgroupV2{name: name, cpu: spec.limits.CPUPercent}
	if c.ownerDir, err = h.dir(ownerCg); err != nil {
		return nil, err
	}
	if c.dir, err = h.dir(name); err != nil {
		return nil, err
	}
	if err := c.makeIn(want, spec.id); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	rel, _ := h.rel(name)
	if c.mgr, err = cgroup2.Load(rel, cgroup2.WithMountpoint(h.mount)); err != nil {
		return nil, fmt.Errorf("tjob: cgroup %s: %w", c.dir, err)
	}
	if err := c.mgr.Update(v2Resources(spec.limits, c.dir, spec.devs)); err != nil {
		return nil, fmt.Errorf("tjob: setting limits on cgroup %s: %w", c.dir, err)
	}
	if c.into, err = os.OpenFile(c.dir, os.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
		return nil, fmt.Errorf("tjob: opening cgroup: %w", err)
	}
	return c, nil
}

// v2Start is where the path to the job's cgroup starts: at the caller's own
// cgroup for a parent inside it, else at the deepest cgroup of the parent's
// path that exists. Going down it, tjob enables controllers only in cgroups
// that are its to change: the caller's own, the parent and what is below it,
// and what it makes. Others (a supervisor's, an administrator's) must enable
// what a limit needs already.
func v2Start(h *hier, base, parent string) (string, error) {
	if base == "/" || parent == base || strings.HasPrefix(parent, base+"/") {
		return base, nil
	}
	start := parent
	for start != "/" {
		d, err := h.dir(start)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(d); err == nil {
			break
		}
		start = path.Dir(start)
	}
	return start, nil
}

// v2Controllers is what the job's cgroup gets: the controllers a limit
// needs (an error names one that cgroup start lacks) and the rest that
// start has, for usage.
func v2Controllers(h *hier, start string, need map[string]string) ([]string, error) {
	startDir, err := h.dir(start)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(startDir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("tjob: reading cgroup controllers: %w", err)
	}
	avail := strings.Fields(string(b))
	var want []string
	for _, c := range v2ControllerNames {
		lim, needed := need[c]
		switch {
		case slices.Contains(avail, c):
			want = append(want, c)
		case needed:
			return nil, fmt.Errorf("tjob: %s needs the cgroup v2 %s controller, which cgroup %s does not have (it has: %s)", lim, c, start, strings.Join(avail, " "))
		}
	}
	return want, nil
}

// enableDown makes the cgroups from start down to the owner directory's
// parent where missing, and enables want in those that are tjob's to change;
// in the others it narrows want to what they enable (an error names a
// controller a limit needs that one does not). It returns want.
func enableDown(h *hier, start, base, parent, ownerCg string, want []string, need map[string]string) ([]string, error) {
	for cg := start; cg != ownerCg; {
		d, err := h.dir(cg)
		if err != nil {
			return nil, err
		}
		ours := cg == base || cg == parent || strings.HasPrefix(cg, parent+"/")
		if _, serr := os.Stat(d); errors.Is(serr, fs.ErrNotExist) {
			if err := mkdirCgroup(d); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err // ErrExist: made by another tjob user just now
			}
			ours = true
		}
		if ours {
			// The caller's own cgroup (not the root) has processes:
			// they move into the supervisor leaf when controllers
			// must be enabled.
			err = enableControllers(d, want, cg == base && base != "/")
		} else {
			want, err = enabledFor(d, cg, want, need)
		}
		if err != nil {
			return nil, err
		}
		next, _, _ := strings.Cut(strings.TrimPrefix(ownerCg, strings.TrimSuffix(cg, "/")+"/"), "/")
		cg = path.Join(cg, next)
	}
	return want, nil
}

// makeIn makes the owner directory if need be, enables want in it, and
// makes the job's cgroup in it. owners is held only while it does, so that
// another job's end does not remove the owner directory in between: the
// walk to it and the limits need no lock.
func (c *cgroupV2) makeIn(want []string, id string) error {
	owners.Lock()
	defer owners.Unlock()
	if err := holdOwnerDir(c.ownerDir); err != nil {
		return err
	}
	err := enableControllers(c.ownerDir, want, false)
	if err == nil {
		err = mkdirCgroup(c.dir)
	}
	if err != nil {
		dropOwnerDir(c.ownerDir)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("tjob: cgroup %s exists already: is job ID %s in use?", c.dir, id)
		}
		return err
	}
	return nil
}

// release undoes a cgroup being made.
func (c *cgroupV2) release() {
	if c.into != nil {
		c.into.Close()
	}
	removeTree(c.dir)
	owners.Lock()
	dropOwnerDir(c.ownerDir)
	owners.Unlock()
}

// v2Resources turns the job's limits into containerd's terms.
func v2Resources(l limits, dir string, devs []devNum) *cgroup2.Resources {
	var res cgroup2.Resources // CPU: see LimitCPU
	if l.MemoryMB > 0 {
		limit := int64(l.MemoryMB) << 20
		res.Memory = &cgroup2.Memory{Max: &limit}
		// No swap, so that the limit is the job's memory, not its RAM.
		// The file exists only where the kernel accounts swap.
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			noSwap := int64(0)
			res.Memory.Swap = &noSwap
		}
	}
	if l.PidsMax > 0 {
		res.Pids = &cgroup2.Pids{Max: int64(l.PidsMax)}
	}
	if len(devs) > 0 {
		res.IO = &cgroup2.IO{}
		for _, d := range devs {
			if l.ReadBPS > 0 {
				res.IO.Max = append(res.IO.Max, cgroup2.Entry{Type: cgroup2.ReadBPS, Major: int64(d.major), Minor: int64(d.minor), Rate: uint64(l.ReadBPS)})
			}
			if l.WriteBPS > 0 {
				res.IO.Max = append(res.IO.Max, cgroup2.Entry{Type: cgroup2.WriteBPS, Major: int64(d.major), Minor: int64(d.minor), Rate: uint64(l.WriteBPS)})
			}
		}
	}
	return &res
}

// enableControllers enables controllers in dir's subtree_control where they
// are not yet. With mayMove, processes in dir (which block that) are moved
// into its supervisor leaf first.
func enableControllers(dir string, ctrls []string, mayMove bool) error {
	file := filepath.Join(dir, "cgroup.subtree_control")
	for attempt := 0; ; attempt++ {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("tjob: reading %s: %w", file, err)
		}
		have := strings.Fields(string(b))
		var add []string
		for _, c := range ctrls {
			if !slices.Contains(have, c) {
				add = append(add, "+"+c)
			}
		}
		if len(add) == 0 {
			return nil
		}
		err = os.WriteFile(file, []byte(strings.Join(add, " ")), 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EBUSY) && mayMove && attempt < 5:
			if err := moveToLeaf(dir); err != nil {
				return err
			}
			continue
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("tjob: cannot enable controllers (%s) in cgroup %s: it has processes of its own, and cgroup v2 allows controllers only in cgroups without; set CgroupParent", strings.Join(add, " "), dir)
		}
		return fmt.Errorf("tjob: enabling controllers (%s) in cgroup %s: %w", strings.Join(add, " "), dir, err)
	}
}

// enabledFor narrows want to the controllers cgroup cg (at dir), which is not
// tjob's to change, enables for its children, failing when a limit needs
// one it does not.
func enabledFor(dir, cg string, want []string, need map[string]string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return nil, fmt.Errorf("tjob: reading cgroup controllers: %w", err)
	}
	have := strings.Fields(string(b))
	var out []string
	for _, c := range want {
		switch lim, needed := need[c]; {
		case slices.Contains(have, c):
			out = append(out, c)
		case needed:
			return nil, fmt.Errorf("tjob: %s needs the cgroup v2 %s controller, which cgroup %s does not enable for the cgroups below it (it enables: %s)", lim, c, cg, strings.Join(have, " "))
		}
	}
	return out, nil
}

// moveToLeaf moves the processes in cgroup dir into dir/tjob-supervisor. The
// caller and whatever shares its cgroup (the processes of the same service
// or container) stay under the same cgroup, and so under the same limits.
func moveToLeaf(dir string) error {
	leaf := filepath.Join(dir, supervisorLeaf)
	if err := mkdirCgroup(leaf); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	procs := filepath.Join(leaf, "cgroup.procs")
	for range 10 { // a process may fork while we move its parent
		pids, err := cgroupProcs(dir, false)
		if err != nil {
			return fmt.Errorf("tjob: reading cgroup %s: %w", dir, err)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			err := os.WriteFile(procs, []byte(fmt.Sprint(pid)), 0)
			if err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("tjob: moving process %d from cgroup %s into %s: %w", pid, dir, leaf, err)
			}
		}
	}
	return fmt.Errorf("tjob: cgroup %s: processes keep appearing while moving them into %s", dir, leaf)
}

func (c *cgroupV2) LimitCPU() error {
	if c.cpu == 0 {
		return nil
	}
	quota, period := int64(c.cpu)*cpuPeriod/100, uint64(cpuPeriod)
	if err := c.mgr.Update(&cgroup2.Resources{CPU: &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)}}); err != nil {
		return fmt.Errorf("tjob: setting the CPU limit on %s: %w", c, err)
	}
	return nil
}

func (c *cgroupV2) String() string        { return "cgroup " + c.name }
func (c *cgroupV2) IntoFile() *os.File    { return c.into }
func (c *cgroupV2) Join(pid int) error    { return joinCgroup(c.dir, pid) }
func (c *cgroupV2) dirOf(_ string) string { return c.dir }

func (c *cgroupV2) Kill(spare int) error {
	if c.removed() {
		return nil
	}
	return killV2(c.dir, spare)
}

func (c *cgroupV2) Signal(sig unix.Signal, spare int) error {
	if _, err := signalProcs([]string{c.dir}, sig, spare); err != nil {
		return fmt.Errorf("tjob: signalling %s: %w", c, err)
	}
	return nil
}

// killV2 kills everything in cgroup dir and below but spare (0: none), and
// waits until it is gone. A process waiting in the kernel on throttled I/O
// cannot die before its I/O is done, so the I/O throttles are lifted once
// all are signalled.
func killV2(dir string, spare int) error {
	err := fs.ErrNotExist
	if spare == 0 {
		err = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	}
	fallback := false
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
			return nil // removed already
		}
		// cgroup.kill spares nobody, and came with Linux 5.14: freeze,
		// kill each, thaw.
		fallback = true
		freezeV2(dir, true)
		_, err = signalProcs([]string{dir}, unix.SIGKILL, spare)
		freezeV2(dir, false)
	}
	if err != nil {
		return fmt.Errorf("tjob: killing cgroup %s: %w", dir, err)
	}
	liftThrottles(dir)
	gone := waitFor(killTimeout, func() bool {
		if spare != 0 {
			empty, err := cgroupsEmpty([]string{dir}, spare)
			if err != nil || empty {
				return true
			}
		} else if b, err := os.ReadFile(filepath.Join(dir, "cgroup.events")); err != nil || strings.Contains(string(b), "populated 0") {
			return true
		}
		if fallback {
			signalProcs([]string{dir}, unix.SIGKILL, spare) // forked before the freeze took
		}
		return false
	})
	if !gone {
		return fmt.Errorf("tjob: cgroup %s: processes still there %v after SIGKILL", dir, killTimeout)
	}
	return nil
}

// freezeV2 freezes or thaws cgroup dir, waiting a little for it to take.
func freezeV2(dir string, frozen bool) {
	v, want := "0", "frozen 0"
	if frozen {
		v, want = "1", "frozen 1"
	}
	if os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte(v), 0) != nil {
		return // before Linux 5.2
	}
	waitFor(time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		return err != nil || strings.Contains(string(b), want)
	})
}

func (c *cgroupV2) Usage() (u Usage, oomKilled bool) {
	m, err := c.mgr.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents | cgroup2.StatIO)
	if err != nil {
		return u, false
	}
	if m.CPU != nil {
		u.CPU = time.Duration(m.CPU.UsageUsec) * time.Microsecond
	}
	if m.Memory != nil {
		u.MemoryPeak = m.Memory.MaxUsage // memory.peak, Linux 5.19 and later
	}
	if m.Io != nil {
		for _, e := range m.Io.Usage {
			u.ReadBytes += e.Rbytes
			u.WriteBytes += e.Wbytes
		}
	}
	return u, m.MemoryEvents != nil && m.MemoryEvents.OomKill > 0
}

func (c *cgroupV2) Remove() error {
	if !c.begin() {
		return nil
	}
	if c.into != nil {
		c.into.Close()
	}
	if _, err := removeTree(c.dir); err != nil {
		return err
	}
	owners.Lock()
	dropOwnerDir(c.ownerDir)
	owners.Unlock()
	return nil
}
