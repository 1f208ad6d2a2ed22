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
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroup v1: a hierarchy per controller (or per group of controllers). The
// job gets a directory in each tjob uses that is mounted; the jail's init
// joins them all before it starts the command. containerd's cgroup1 package
// writes the limits (its cpu, memory, blkio and pids controllers) and reads
// the usage (Cgroup.Stat). Written here, because the package does not fit:
//
//   - the OOM kill count: Stat reads memory.oom_control's oom_kill but
//     cannot tell a zero from a kernel that does not count (before 4.13);
//     there an OOM notification (cgroup.event_control) tells instead;
//   - freezing: the package's freeze loop has no bound, and a task stuck in
//     the kernel keeps a cgroup FREEZING for as long as it likes;
//   - removing: as on v2 (see cgroup_v2.go).

// cgroupV1 is a job's cgroups on cgroup v1.
type cgroupV1 struct {
	names     []string          // as /proc/<pid>/cgroup shows them, distinct
	dirs      []string          // one per hierarchy, the freezer's first
	byCtrl    map[string]string // controller → its directory
	ownerDirs []string
	cg        cgroup1.Cgroup
	oomFD     int // eventfd of the OOM notification, or -1
	cpu       int // CPUPercent, set by LimitCPU

	removal
}

// v1OOMEventOnly makes the OOM notification decide OOMKilled even where
// the kernel counts OOM kills (tests: the fallback must work too).
var v1OOMEventOnly = false

func newCgroupV1(spec cgroupSpec, sys *cgroupSystem, owner string) (_ *cgroupV1, err error) {
	needs := controllersNeeded(spec.limits, "blkio")
	for _, c := range v1Controllers {
		if lim, ok := needs[c]; ok && sys.v1[c] == nil {
			return nil, fmt.Errorf("tjob: %s needs the cgroup v1 %s controller, which is not mounted", lim, c)
		}
	}
	c := &cgroupV1{byCtrl: map[string]string{}, oomFD: -1, cpu: spec.limits.CPUPercent}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	rels, err := c.makeDirs(spec, sys, owner)
	if err != nil {
		return nil, err
	}
	subs, err := v1Subsystems(sys, needs)
	if err != nil {
		return nil, err
	}
	c.cg, err = cgroup1.New(
		func(n cgroup1.Name) (string, error) { return rels[string(n)], nil },
		v1Resources(spec.limits, c.byCtrl["memory"], spec.devs),
		cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil }),
	)
	if err != nil {
		return nil, fmt.Errorf("tjob: setting limits on %s: %w", c, err)
	}
	memSub := slices.ContainsFunc(subs, func(s cgroup1.Subsystem) bool { return s.Name() == cgroup1.Memory })
	if err := c.notifyOOM(memSub); err != nil {
		return nil, err
	}
	return c, nil
}

// makeDirs makes the job's cgroup in each hierarchy, and the parent and
// owner directory above it where missing. It returns each controller's
// cgroup relative to its mount, as containerd takes it.
func (c *cgroupV1) makeDirs(spec cgroupSpec, sys *cgroupSystem, owner string) (map[string]string, error) {
	rels := map[string]string{}
	for _, h := range sys.hierarchies() {
		parent := parentOf(h, spec.parent)
		// The parent, made if missing (v1 has no controllers to enable).
		for _, p := range ancestors(parent) {
			d, err := h.dir(p)
			if err != nil {
				return nil, err
			}
			if err := mkdirCgroup(d); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
		}
		ownerDir, err := h.dir(path.Join(parent, owner))
		if err != nil {
			return nil, err
		}
		name := path.Join(parent, owner, spec.id)
		dir, _ := h.dir(name)
		if err := c.makeIn(ownerDir, dir); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("tjob: cgroup %s exists already: is job ID %s in use?", dir, spec.id)
			}
			return nil, err
		}
		if !slices.Contains(c.names, name) {
			c.names = append(c.names, name)
		}
		rel, _ := h.rel(name)
		for _, ctrl := range h.ctrls {
			c.byCtrl[ctrl] = dir
			rels[ctrl] = rel
		}
	}
	return rels, nil
}

// v1Subsystems are containerd's controllers for the hierarchies mounted
// where it looks for them (<root>/<controller>). One that is not there is
// an error if a limit needs it; else only its usage is lost.
func v1Subsystems(sys *cgroupSystem, needs map[string]string) ([]cgroup1.Subsystem, error) {
	var subs []cgroup1.Subsystem
	for _, ctrl := range []string{"cpu", "cpuacct", "memory", "blkio", "pids"} {
		h := sys.v1[ctrl]
		if h == nil {
			continue
		}
		root, err := v1Root(h, ctrl)
		if err != nil {
			if _, needed := needs[ctrl]; needed {
				return nil, err
			}
			continue
		}
		switch ctrl {
		case "cpu":
			subs = append(subs, cgroup1.NewCpu(root))
		case "cpuacct":
			subs = append(subs, cgroup1.NewCpuacct(root))
		case "memory":
			subs = append(subs, cgroup1.NewMemory(root, cgroup1.OptionalSwap(), cgroup1.IgnoreModules("kmem", "kmem.tcp")))
		case "blkio":
			subs = append(subs, cgroup1.NewBlkio(root))
		case "pids":
			subs = append(subs, cgroup1.NewPids(root))
		}
	}
	return subs, nil
}

// notifyOOM registers an OOM notification, when containerd handles the
// memory controller (memSub), where the kernel does not count
// OOM kills in memory.oom_control (before 4.13), or where the tests say so.
func (c *cgroupV1) notifyOOM(memSub bool) error {
	mem := c.byCtrl["memory"]
	if !memSub || mem == "" || (!v1OOMEventOnly && hasOOMKillCount(mem)) {
		return nil
	}
	fd, err := c.cg.RegisterMemoryEvent(cgroup1.OOMEvent())
	if err != nil {
		return fmt.Errorf("tjob: OOM notification for %s: %w", c, err)
	}
	c.oomFD = int(fd)
	if err := unix.SetNonblock(c.oomFD, true); err != nil {
		return fmt.Errorf("tjob: OOM notification for %s: %w", c, err)
	}
	return nil
}

// makeIn makes job cgroup dir in owner directory ownerDir. owners is held
// only while it does, so that another job's end does not remove the owner
// directory in between: making cgroups and writing limits need no lock.
func (c *cgroupV1) makeIn(ownerDir, dir string) error {
	owners.Lock()
	defer owners.Unlock()
	if err := holdOwnerDir(ownerDir); err != nil {
		return err
	}
	c.ownerDirs = append(c.ownerDirs, ownerDir)
	if err := mkdirCgroup(dir); err != nil {
		return err
	}
	c.dirs = append(c.dirs, dir)
	return nil
}

// ancestors lists cgroup p and the cgroups above it but the root, top down.
func ancestors(p string) []string {
	var out []string
	for ; p != "/" && p != "." && p != ""; p = path.Dir(p) {
		out = append([]string{p}, out...)
	}
	return out
}

// v1Root returns the directory containerd's controllers take as the root of
// all v1 hierarchies: the hierarchy must be reachable at <root>/<ctrl>, as it
// is where each controller is mounted alone under its name, or where
// co-mounted ones ("cpu,cpuacct") have symlinks named after each.
func v1Root(h *hier, ctrl string) (string, error) {
	root := filepath.Dir(h.mount)
	if filepath.Base(h.mount) == ctrl {
		return root, nil
	}
	a, err1 := os.Stat(filepath.Join(root, ctrl))
	b, err2 := os.Stat(h.mount)
	if err1 == nil && err2 == nil && os.SameFile(a, b) {
		return root, nil
	}
	return "", fmt.Errorf("tjob: the cgroup v1 %s controller is mounted at %s; tjob needs it reachable at %s too (a symlink will do)", ctrl, h.mount, filepath.Join(root, ctrl))
}

// v1Resources turns the job's limits into the OCI terms containerd's cgroup1
// package takes.
func v1Resources(l limits, memDir string, devs []devNum) *specs.LinuxResources {
	var res specs.LinuxResources // CPU: see LimitCPU
	if l.MemoryMB > 0 {
		limit := int64(l.MemoryMB) << 20
		res.Memory = &specs.LinuxMemory{Limit: &limit}
		// memsw is memory and swap together: equal to the memory limit,
		// it leaves no swap. It exists only where the kernel accounts
		// swap. (containerd writes it after the memory limit, as the
		// kernel wants: memsw may never be below it.)
		if _, err := os.Stat(filepath.Join(memDir, "memory.memsw.limit_in_bytes")); err == nil {
			memsw := limit
			res.Memory.Swap = &memsw
		}
	}
	if l.PidsMax > 0 {
		n := int64(l.PidsMax)
		res.Pids = &specs.LinuxPids{Limit: &n}
	}
	if len(devs) > 0 {
		res.BlockIO = &specs.LinuxBlockIO{}
		for _, d := range devs {
			dev := specs.LinuxBlockIODevice{Major: int64(d.major), Minor: int64(d.minor)}
			if l.ReadBPS > 0 {
				res.BlockIO.ThrottleReadBpsDevice = append(res.BlockIO.ThrottleReadBpsDevice,
					specs.LinuxThrottleDevice{LinuxBlockIODevice: dev, Rate: uint64(l.ReadBPS)})
			}
			if l.WriteBPS > 0 {
				res.BlockIO.ThrottleWriteBpsDevice = append(res.BlockIO.ThrottleWriteBpsDevice,
					specs.LinuxThrottleDevice{LinuxBlockIODevice: dev, Rate: uint64(l.WriteBPS)})
			}
		}
	}
	return &res
}

// hasOOMKillCount reports whether memory.oom_control counts OOM kills
// (Linux 4.13 and later).
func hasOOMKillCount(memDir string) bool {
	_, ok := oomKills(memDir)
	return ok
}

// oomKills reads the oom_kill count of memory.oom_control.
func oomKills(memDir string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(memDir, "memory.oom_control"))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func (c *cgroupV1) LimitCPU() error {
	if c.cpu == 0 {
		return nil
	}
	quota, period := int64(c.cpu)*cpuPeriod/100, uint64(cpuPeriod)
	if err := c.cg.Update(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}); err != nil {
		return fmt.Errorf("tjob: setting the CPU limit on %s: %w", c, err)
	}
	return nil
}

func (c *cgroupV1) String() string     { return "cgroup " + strings.Join(c.names, ", ") }
func (c *cgroupV1) IntoFile() *os.File { return nil }
func (c *cgroupV1) dirOf(ctrl string) string {
	if ctrl == "io" {
		ctrl = "blkio"
	}
	return c.byCtrl[ctrl]
}

func (c *cgroupV1) Join(pid int) error {
	for _, d := range c.dirs {
		if err := joinCgroup(d, pid); err != nil {
			return err
		}
	}
	return nil
}

func (c *cgroupV1) Kill(spare int) error {
	if c.removed() {
		return nil
	}
	return killV1(c.dirs, spare)
}

func (c *cgroupV1) Signal(sig unix.Signal, spare int) error {
	if _, err := signalProcs(c.dirs[:1], sig, spare); err != nil {
		return fmt.Errorf("tjob: signalling %s: %w", c, err)
	}
	return nil
}

// killV1 kills everything in cgroup directories dirs (one per hierarchy) and
// below but spare (0: none), and waits until it is gone. Frozen, the processes can neither fork
// nor exit while they are listed and signalled. I/O throttles are lifted
// (see killV2) once the freezer stops the processes from starting more
// I/O, so that one waiting on its I/O finishes it and freezes.
func killV1(dirs []string, spare int) error {
	// An empty cgroup stays empty: nothing in it can fork. That is the
	// common case at the end of a job, and it needs no freezing.
	if empty, err := cgroupsEmpty(dirs, spare); err == nil && empty {
		return nil
	}
	freezer := ""
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "freezer.state")); err == nil {
			freezer = d
			break
		}
	}
	frozen := freezer != "" && os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("FROZEN"), 0) == nil
	lift := func() {
		for _, d := range dirs {
			liftThrottles(d)
		}
	}
	if frozen {
		lift()
		waitFreezer(freezer, "FROZEN")
	}
	_, err := signalProcs(dirs, unix.SIGKILL, spare)
	if freezer != "" {
		// Killed processes die only once thawed. A cgroup below that
		// was frozen on its own (a job being killed when its owner
		// crashed) stays frozen when its parent thaws: thaw them all.
		thawTree(freezer)
		waitFreezer(freezer, "THAWED")
	}
	if !frozen {
		lift()
	}
	if err != nil {
		return fmt.Errorf("tjob: killing cgroup %s: %w", dirs[0], err)
	}
	gone := waitFor(killTimeout, func() bool {
		n, err := signalProcs(dirs, unix.SIGKILL, spare) // again: any that forked before the freeze took
		return err != nil || n == 0
	})
	if !gone {
		return fmt.Errorf("tjob: cgroup %s: processes still there %v after SIGKILL", dirs[0], killTimeout)
	}
	return nil
}

// thawTree thaws freezer cgroup dir and every cgroup below it.
func thawTree(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.WriteFile(filepath.Join(p, "freezer.state"), []byte("THAWED"), 0)
		}
		return nil
	})
}

// waitFreezer waits a little for freezer.state to take: a task stuck in the
// kernel keeps a cgroup FREEZING.
func waitFreezer(dir, state string) {
	file := filepath.Join(dir, "freezer.state")
	waitFor(time.Second, func() bool {
		b, err := os.ReadFile(file)
		return err != nil || strings.TrimSpace(string(b)) == state
	})
}

func (c *cgroupV1) Usage() (u Usage, oomKilled bool) {
	// Partial usage beats none: a controller's missing file is skipped.
	m, err := c.cg.Stat(func(error) error { return nil })
	if err == nil && m != nil {
		if m.CPU != nil && m.CPU.Usage != nil {
			u.CPU = time.Duration(m.CPU.Usage.Total) // cpuacct.usage, ns
		}
		if m.Memory != nil && m.Memory.Usage != nil {
			u.MemoryPeak = m.Memory.Usage.Max // memory.max_usage_in_bytes
		}
		if m.Blkio != nil {
			for _, e := range m.Blkio.IoServiceBytesRecursive {
				switch e.Op {
				case "Read":
					u.ReadBytes += e.Value
				case "Write":
					u.WriteBytes += e.Value
				}
			}
		}
	}
	if c.oomFD >= 0 {
		var buf [8]byte
		n, err := unix.Read(c.oomFD, buf[:])
		return u, err == nil && n == 8 && buf != [8]byte{}
	}
	if mem := c.byCtrl["memory"]; mem != "" {
		n, _ := oomKills(mem)
		return u, n > 0
	}
	return u, false
}

func (c *cgroupV1) Remove() error {
	if !c.begin() {
		return nil
	}
	if err := c.removeDirs(); err != nil {
		return err
	}
	owners.Lock()
	c.dropOwnerDirs()
	owners.Unlock()
	return nil
}

// release undoes a cgroup being made.
func (c *cgroupV1) release() {
	c.removeDirs()
	owners.Lock()
	c.dropOwnerDirs()
	owners.Unlock()
}

// removeDirs closes the OOM notification and removes the job's directories.
func (c *cgroupV1) removeDirs() error {
	if c.oomFD >= 0 {
		unix.Close(c.oomFD)
		c.oomFD = -1
	}
	var err error
	for _, d := range c.dirs {
		_, e := removeTree(d)
		err = errors.Join(err, e)
	}
	return err
}

// dropOwnerDirs removes the owner directories the job leaves empty. The
// caller holds owners.
func (c *cgroupV1) dropOwnerDirs() {
	for _, d := range c.ownerDirs {
		dropOwnerDir(d)
	}
}
