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
	"sync"
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

	mu      sync.Mutex // orders Kill and Remove
	removed bool
}

func newCgroupV2(j *Job, h *hier, owner string, devs []devNum) (_ *cgroupV2, err error) {
	base := baseOf(h)
	parent := parentOf(h, j.CgroupParent)
	ownerCg := path.Join(parent, owner)
	name := path.Join(ownerCg, j.ID)

	// The path to the job's cgroup starts at the caller's own cgroup for a
	// parent inside it, else at the deepest cgroup of CgroupParent's path
	// that exists. Going down it, tjob enables controllers only in cgroups
	// that are its to change: the caller's own, the parent and what is
	// below it, and what it makes. Others (a supervisor's, an
	// administrator's) must enable what a limit needs already.
	start := base
	if !(base == "/" || parent == base || strings.HasPrefix(parent, base+"/")) {
		start = parent
		for start != "/" {
			d, err := h.dir(start)
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(d); err == nil {
				break
			}
			start = path.Dir(start)
		}
	}
	startDir, err := h.dir(start)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(startDir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("tjob: reading cgroup controllers: %w", err)
	}
	avail := strings.Fields(string(b))
	need := controllersNeeded(j, "io")
	for _, c := range v2Controllers {
		if lim, ok := need[c]; ok && !slices.Contains(avail, c) {
			return nil, fmt.Errorf("tjob: %s needs the cgroup v2 %s controller, which cgroup %s does not have (it has: %s)", lim, c, start, strings.Join(avail, " "))
		}
	}
	var want []string // what the job's cgroup gets: those a limit needs, and the rest for usage
	for _, c := range v2Controllers {
		if slices.Contains(avail, c) {
			want = append(want, c)
		}
	}

	ownerDir, err := h.dir(ownerCg)
	if err != nil {
		return nil, err
	}
	dir, err := h.dir(name)
	if err != nil {
		return nil, err
	}
	rel, _ := h.rel(name)
	// owners is held from the owner directory until the job's cgroup is
	// in it, so that another job's end does not remove the directory in
	// between; the rest of the walk and the limits need no lock.
	for cg := start; ; {
		d, _ := h.dir(cg)
		ours := cg == base || cg == parent || strings.HasPrefix(cg, parent+"/")
		switch _, serr := os.Stat(d); {
		case cg == ownerCg:
			owners.Lock()
			err = holdOwnerDir(d)
		case errors.Is(serr, fs.ErrNotExist):
			err = mkdirCgroup(d)
			if errors.Is(err, fs.ErrExist) {
				err = nil // made by another tjob user just now
			}
			ours = true
		}
		if err != nil {
			if cg == ownerCg {
				owners.Unlock()
			}
			return nil, err
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
			if cg == ownerCg {
				dropOwnerDir(ownerDir)
				owners.Unlock()
			}
			return nil, err
		}
		if cg == ownerCg {
			break
		}
		next, _, _ := strings.Cut(strings.TrimPrefix(ownerCg, strings.TrimSuffix(cg, "/")+"/"), "/")
		cg = path.Join(cg, next)
	}

	err = mkdirCgroup(dir)
	if err != nil {
		dropOwnerDir(ownerDir)
	}
	owners.Unlock()
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("tjob: cgroup %s exists already: is job ID %s in use?", dir, j.ID)
		}
		return nil, err
	}
	c := &cgroupV2{name: name, dir: dir, ownerDir: ownerDir, cpu: j.CPUPercent}
	defer func() {
		if err != nil {
			if c.into != nil {
				c.into.Close()
			}
			removeTree(dir)
			owners.Lock()
			dropOwnerDir(ownerDir)
			owners.Unlock()
		}
	}()
	if c.mgr, err = cgroup2.Load(rel, cgroup2.WithMountpoint(h.mount)); err != nil {
		return nil, fmt.Errorf("tjob: cgroup %s: %w", dir, err)
	}
	if err := c.mgr.Update(v2Resources(j, dir, devs)); err != nil {
		return nil, fmt.Errorf("tjob: setting limits on cgroup %s: %w", dir, err)
	}
	if c.into, err = os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
		return nil, fmt.Errorf("tjob: opening cgroup: %w", err)
	}
	return c, nil
}

// v2Resources turns the job's limits into containerd's terms.
func v2Resources(j *Job, dir string, devs []devNum) *cgroup2.Resources {
	var res cgroup2.Resources // CPU: see LimitCPU
	if j.MemoryMB > 0 {
		limit := int64(j.MemoryMB) << 20
		res.Memory = &cgroup2.Memory{Max: &limit}
		// No swap, so that the limit is the job's memory, not its RAM.
		// The file exists only where the kernel accounts swap.
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			noSwap := int64(0)
			res.Memory.Swap = &noSwap
		}
	}
	if j.PidsMax > 0 {
		res.Pids = &cgroup2.Pids{Max: int64(j.PidsMax)}
	}
	if len(devs) > 0 {
		res.IO = &cgroup2.IO{}
		for _, d := range devs {
			if j.ReadBPS > 0 {
				res.IO.Max = append(res.IO.Max, cgroup2.Entry{Type: cgroup2.ReadBPS, Major: int64(d.major), Minor: int64(d.minor), Rate: uint64(j.ReadBPS)})
			}
			if j.WriteBPS > 0 {
				res.IO.Max = append(res.IO.Max, cgroup2.Entry{Type: cgroup2.WriteBPS, Major: int64(d.major), Minor: int64(d.minor), Rate: uint64(j.WriteBPS)})
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
	// The lock guards only the state: killing waits for processes to
	// go, and a concurrent Remove copes with that.
	c.mu.Lock()
	removed := c.removed
	c.mu.Unlock()
	if removed {
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
	// Claimed under the lock, done outside it: removing retries a busy
	// cgroup for a while, and Kill must not wait for that.
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return nil
	}
	c.removed = true
	into := c.into
	c.into = nil
	c.mu.Unlock()
	if into != nil {
		into.Close()
	}
	if _, err := removeTree(c.dir); err != nil {
		return err
	}
	owners.Lock()
	dropOwnerDir(c.ownerDir)
	owners.Unlock()
	return nil
}
