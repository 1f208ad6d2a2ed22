//go:build linux

package tjob

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Resource limits: every job gets a cgroup of its own, with the limits the
// Job asks for written into it before the command runs.
//
// # Limits and their units
//
// Zero means no limit; negative or absurd values are refused with ErrInvalid
// before anything starts (see validateLimits for the bounds).
//
//   - CPUPercent: percent of one CPU, over a 100 ms period: 20 is a fifth of
//     one CPU, 250 two and a half CPUs. v2 cpu.max "20000 100000"; v1
//     cpu.cfs_quota_us 20000 and cpu.cfs_period_us 100000.
//   - MemoryMB: MiB (1<<20 bytes) of memory. v2 memory.max, and
//     memory.swap.max 0 where the kernel accounts swap; v1
//     memory.limit_in_bytes, and memory.memsw.limit_in_bytes equal to it
//     where present. So the job cannot use swap to get past the limit; when
//     it needs more, the kernel's OOM killer kills one of its processes and
//     the final Status says OOMKilled.
//   - ReadBPS, WriteBPS: bytes per second on each block device behind the
//     job's working directory and the root file system, or IODevices (see
//     blockdev.go). v2 io.max rbps/wbps; v1 blkio.throttle.read_bps_device
//     and write_bps_device. The kernel throttles I/O that reaches the device:
//     direct I/O and reads that miss the page cache, and on v2 also the
//     write-back of the job's buffered writes. Reads served from the page
//     cache are not throttled, and on v1 neither are buffered writes (v1
//     cannot tell whose dirty pages the flusher writes).
//   - PidsMax: processes and threads at once. pids.max.
//
// # Layout
//
// One cgroup per job, at <parent>/<owner>/<job ID> in each hierarchy used:
//
//   - parent: Job.CgroupParent, or else "tjob" inside the caller's own
//     cgroup (from /proc/self/cgroup), which is "/tjob" when the caller is in
//     the root cgroup. A server confined by its supervisor (systemd with
//     Delegate=yes, a container) stays confined together with its jobs.
//   - owner: "owner-<pid>-<start time>", the process that runs the jobs, with
//     its start time in clock ticks since boot (field 22 of /proc/<pid>/stat)
//     so that a reused pid is never mistaken for it. The owner holds an
//     exclusive flock on its directory for as long as it lives: a dead
//     owner's jobs are found without guessing, across PID namespaces too.
//     CleanupStale kills and removes what dead owners left (a crashed
//     server); every process does that once, when it starts its first job.
//   - cgroup v2 only: the job's cgroup gets the cpu, memory, io and pids
//     controllers that are available, so that its usage can be read too.
//     tjob enables them (cgroup.subtree_control) in the caller's own cgroup,
//     in the parent and below, and in cgroups it makes; any other cgroup on
//     the way must already enable those a limit needs, or the job is refused
//     naming the controller. The kernel allows controllers only in cgroups
//     without processes of their own (the root excepted): when the caller's
//     cgroup is not the root and its controllers are not enabled yet, its
//     processes move into a leaf next to the jobs, <own>/tjob-supervisor,
//     first.
//   - cgroup v1: the job has a cgroup in each of the freezer, cpu, cpuacct,
//     memory, blkio and pids hierarchies that is mounted.
//
// The job's process is born inside its cgroup on v2
// (clone3(CLONE_INTO_CGROUP)); on v1 the jail's init joins the cgroups
// before it starts the command. When the job ends, whatever is left in the
// cgroup is killed and the cgroup removed; the owner directory goes with its
// last job. The "tjob" parent and the supervisor leaf stay: other processes
// may be using them.

// cgroup is one job's control group. The job's process is placed in it
// before the command runs: by clone3(CLONE_INTO_CGROUP) where the kernel
// can (IntoFile), or else by Join while the init waits for its job.
type cgroup interface {
	// String names the cgroup for messages.
	String() string
	// IntoFile is the cgroup's directory opened for CLONE_INTO_CGROUP, or
	// nil where that does not work (cgroup v1). Remove closes it.
	IntoFile() *os.File
	// Join moves process pid (with all its threads) into the cgroup.
	Join(pid int) error
	// LimitCPU sets the CPU limit, which the cgroup is made without: the
	// jail's init sets the jail up first at full speed (throttled to a
	// fifth of a CPU, that took five times as long), and the limit is set
	// before the command starts.
	LimitCPU() error
	// Kill kills every process in the cgroup but spare (0: none) and
	// returns once they are gone. It may be called any number of times,
	// also concurrently and after Remove.
	Kill(spare int) error
	// Signal sends sig to every process in the cgroup but spare (0: none),
	// at once, without waiting for any of them: the kernel delivers it
	// whether or not the job gets CPU time.
	Signal(sig unix.Signal, spare int) error
	// Usage reads what the job used and whether the kernel killed one of
	// its processes for lack of memory. Call it after Kill, before Remove.
	Usage() (u Usage, oomKilled bool)
	// Remove deletes the cgroup. Only the first call does anything.
	Remove() error
}

const (
	// cpuPeriod is the CFS bandwidth period, in microseconds.
	cpuPeriod = 100_000

	// minMemoryMB: Docker's floor. A jailed shell peaks at 3-5 MiB on v2,
	// where the jail's init (a Go program) is charged to the job too; a
	// -race build's init alone takes some 15 MiB there.
	minMemoryMB = 6
	// maxMemoryMB keeps the limit in bytes within the kernel's int64.
	maxMemoryMB = math.MaxInt64 >> 20

	// minBPS: the kernel throttles whole requests; below a page a second
	// even the smallest read would take longer than a second.
	minBPS = 4096

	// minPidsMax: the jail's init is a Go program with threads of its
	// own, and threads count: a jailed shell needs 9 or 10, with -race
	// more. Below, the init cannot start.
	minPidsMax = 16
	// maxPidsMax is the kernel's limit (PID_MAX_LIMIT).
	maxPidsMax = 4 << 20

	jobsGroup      = "tjob"            // the default parent, inside the caller's cgroup
	supervisorLeaf = "tjob-supervisor" // v2: where the caller's processes move

	// killTimeout bounds how long Kill waits for killed processes to be
	// gone; rmdirTimeout how long Remove retries a busy cgroup.
	killTimeout  = 5 * time.Second
	rmdirTimeout = 2 * time.Second
)

// limits are a job's resource limits, the value the cgroup layer takes.
type limits struct {
	CPUPercent, MemoryMB, ReadBPS, WriteBPS, PidsMax int
}

func (j *Job) limits() limits {
	return limits{j.CPUPercent, j.MemoryMB, j.ReadBPS, j.WriteBPS, j.PidsMax}
}

// cgroupSpec is what a job's cgroup is made from.
type cgroupSpec struct {
	id     string // the job's ID: the cgroup's name
	parent string // Job.CgroupParent; empty for the default
	limits limits
	devs   []devNum // the block devices ReadBPS and WriteBPS limit
}

// limitBound is one limit's value and bounds, for checkLimits.
type limitBound struct {
	name     string
	v        int
	min, max int
	unit     string
}

func (l limits) bounds() []limitBound {
	cpus := runtime.NumCPU()
	return []limitBound{
		{"CPUPercent", l.CPUPercent, 1, 100 * cpus, fmt.Sprintf("%d CPUs", cpus)},
		{"MemoryMB", l.MemoryMB, minMemoryMB, maxMemoryMB, "MiB"},
		{"ReadBPS", l.ReadBPS, minBPS, math.MaxInt64, "bytes per second"},
		{"WriteBPS", l.WriteBPS, minBPS, math.MaxInt64, "bytes per second"},
		{"PidsMax", l.PidsMax, minPidsMax, maxPidsMax, "processes and threads"},
	}
}

// checkLimits rejects negative or absurd limits before anything starts.
func checkLimits(l limits) error {
	for _, b := range l.bounds() {
		switch {
		case b.v < 0:
			return invalid(b.name, "is negative (%d)", b.v)
		case b.v == 0:
		case b.v < b.min:
			return invalid(b.name, "%d is below the minimum of %d (%s)", b.v, b.min, b.unit)
		case b.v > b.max && b.name == "CPUPercent":
			return invalid(b.name, "%d is more than this machine's %s (at most %d)", b.v, b.unit, b.max)
		case b.v > b.max:
			return invalid(b.name, "%d is above the maximum of %d (%s)", b.v, b.max, b.unit)
		}
	}
	return nil
}

// checkCgroupUse rejects what needs a cgroup when there is none, and a
// malformed CgroupParent or IODevices entry.
func checkCgroupUse(j *Job) error {
	if j.NoCgroup {
		for _, b := range j.limits().bounds() {
			if b.v != 0 {
				return invalid(b.name, "%d needs a cgroup, but NoCgroup is set", b.v)
			}
		}
		if len(j.IODevices) > 0 || j.CgroupParent != "" {
			return invalid("IODevices", "and CgroupParent need a cgroup, but NoCgroup is set")
		}
	}
	if p := j.CgroupParent; p != "" && (!strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.ContainsAny(p, "\n\x00")) {
		return invalid("CgroupParent", "%q is not a clean absolute cgroup path such as /jobs", p)
	}
	for _, d := range j.IODevices {
		if _, err := parseIODevice(d); err != nil {
			return err
		}
	}
	return nil
}

// controllersNeeded maps each controller that the limits need to the limit
// that needs it, for errors that name both. io names the I/O controller:
// "io" on v2, "blkio" on v1.
func controllersNeeded(l limits, io string) map[string]string {
	need := map[string]string{}
	if l.CPUPercent > 0 {
		need["cpu"] = "CPUPercent"
	}
	if l.MemoryMB > 0 {
		need["memory"] = "MemoryMB"
	}
	if l.ReadBPS > 0 || l.WriteBPS > 0 {
		need[io] = "ReadBPS/WriteBPS"
	}
	if l.PidsMax > 0 {
		need["pids"] = "PidsMax"
	}
	return need
}

// newCgroup makes the job's cgroup with its limits; nil when j.NoCgroup.
func newCgroup(j *Job) (cgroup, error) {
	if j.NoCgroup {
		return nil, nil
	}
	sys, err := detectCgroups()
	if err != nil {
		return nil, err
	}
	owner, err := ownerName()
	if err != nil {
		return nil, err
	}
	spec := cgroupSpec{id: j.ID, parent: j.CgroupParent, limits: j.limits()}
	if j.ReadBPS > 0 || j.WriteBPS > 0 {
		if spec.devs, err = ioDevices(j.IODevices, j.ioPaths()); err != nil {
			return nil, err
		}
	}
	cleanupFirst(sys, j.CgroupParent)
	var cg cgroup
	if sys.v2 != nil {
		cg, err = newCgroupV2(spec, sys.v2, owner)
	} else {
		cg, err = newCgroupV1(spec, sys, owner)
	}
	if err != nil {
		return nil, err // not a typed nil
	}
	return cg, nil
}

// removal orders a cgroup's Kill and Remove: Kill does nothing once Remove
// has begun, and only the first Remove removes. The lock guards only that:
// killing and removing wait for processes, and neither waits for the other.
type removal struct {
	mu   sync.Mutex
	done bool
}

// removed reports whether Remove has begun.
func (r *removal) removed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

// begin claims the removal: true for the first caller only.
func (r *removal) begin() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	r.done = true
	return true
}

// parentOf is where job cgroups go in hierarchy h: custom (Job.CgroupParent)
// or "tjob" inside the caller's own cgroup.
func parentOf(h *hier, custom string) string {
	if custom != "" {
		return custom
	}
	return path.Join(baseOf(h), jobsGroup)
}

// baseOf is the caller's own cgroup in h; on v2, where tjob may have moved
// the caller into the supervisor leaf, the cgroup it was moved from. Every
// process using tjob in one cgroup so finds the same parent.
func baseOf(h *hier) string {
	if h.version == 2 && path.Base(h.own) == supervisorLeaf {
		return path.Dir(h.own)
	}
	return h.own
}

// Owner directories.

// parseOwner reads an owner directory's name, strictly: only names tjob
// makes, "owner-<pid>-<start time>" in plain decimal, pass.
func parseOwner(name string) (pid int, start uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, "owner-")
	if !ok {
		return 0, 0, false
	}
	p, s, ok := strings.Cut(rest, "-")
	if !ok || !decimal(p, 10) || p[0] == '0' || !decimal(s, 20) {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(s, 10, 64)
	return pid, start, err1 == nil && err2 == nil
}

// decimal reports whether s is 1 to max decimal digits.
func decimal(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

var self struct {
	once sync.Once
	name string
	err  error
}

// ownerName names this process's owner directory.
func ownerName() (string, error) {
	self.once.Do(func() {
		pid := os.Getpid()
		start, err := procStartTime(pid)
		if err != nil {
			self.err = fmt.Errorf("tjob: start time of this process: %w", err)
			return
		}
		self.name = fmt.Sprintf("owner-%d-%d", pid, start)
	})
	return self.name, self.err
}

// procStartTime reads when process pid started, in clock ticks after boot.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ppid ...": comm may hold anything, even ") ".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3 // fields after the command name start at 3
	if len(f) <= startField {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.ParseUint(f[startField], 10, 64)
}

// owners is this process's owner directories and the parents it has cleaned
// of stale ones. Its lock also orders the making and removing of owner
// directories with the making of job cgroups in them.
var owners struct {
	sync.Mutex
	locks   map[string]*os.File // owner directory → open, and flock'ed
	cleaned map[string]bool     // Job.CgroupParent values ("" for the default) cleaned
}

// holdOwnerDir makes (or finds) an owner directory of this process and holds
// its flock. The caller holds owners.
func holdOwnerDir(dir string) error {
	if f := owners.locks[dir]; f != nil {
		if _, err := os.Stat(dir); err == nil {
			return nil
		}
		f.Close() // removed behind our back: make it again
		delete(owners.locks, dir)
	}
	if err := mkdirCgroup(dir); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("tjob: opening cgroup %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("tjob: locking cgroup %s: %w", dir, err)
	}
	if owners.locks == nil {
		owners.locks = map[string]*os.File{}
	}
	owners.locks[dir] = f
	return nil
}

// dropOwnerDir removes an owner directory of this process unless jobs are
// still in it. The caller holds owners.
func dropOwnerDir(dir string) {
	err := unix.Rmdir(dir)
	if err != nil && err != unix.ENOENT {
		return // EBUSY or ENOTEMPTY: other jobs of ours are in it
	}
	if f := owners.locks[dir]; f != nil {
		f.Close()
		delete(owners.locks, dir)
	}
}

// mkdirCgroup makes one cgroup directory, explaining the usual failures.
func mkdirCgroup(dir string) error {
	err := os.Mkdir(dir, 0o755)
	switch {
	case err == nil || errors.Is(err, fs.ErrExist):
		return err
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("tjob: creating cgroup %s: permission denied (run as root or set NoCgroup)", dir)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("tjob: creating cgroup %s: read-only file system (the cgroup file system is mounted read-only; set NoCgroup)", dir)
	}
	return fmt.Errorf("tjob: creating cgroup: %w", err)
}

// Stale owners.

// CleanupStale kills the processes in, and removes, the job cgroups left by
// processes that have exited without removing them (a crashed server). It
// looks under the default parent in each hierarchy, and under every
// Job.CgroupParent this process has used. It touches only owner directories
// that tjob made ("owner-<pid>-<start time>") and whose owner is gone: one
// whose flock nobody holds and whose pid is not running with that start
// time. It returns the cgroup directories it removed.
//
// Every process runs it once, before its first job starts; a server may call
// it at start to log what it removed.
func CleanupStale() (removed []string, err error) {
	sys, err := detectCgroups()
	if err != nil {
		return nil, err
	}
	owners.Lock()
	parents := []string{""}
	for p := range owners.cleaned {
		if p != "" {
			parents = append(parents, p)
		}
	}
	owners.Unlock()
	slices.Sort(parents)
	return cleanupStale(sys, parents)
}

// cleanupFirst runs cleanupStale for a parent the first time this process
// uses it. Errors are not the job's: the job goes on without the cleanup.
func cleanupFirst(sys *cgroupSystem, parent string) {
	owners.Lock()
	done := owners.cleaned[parent]
	if owners.cleaned == nil {
		owners.cleaned = map[string]bool{}
	}
	owners.cleaned[parent] = true
	owners.Unlock()
	if !done {
		cleanupStale(sys, []string{parent})
	}
}

func cleanupStale(sys *cgroupSystem, parents []string) (removed []string, err error) {
	for _, parent := range parents {
		// On v1 an owner has a directory in each hierarchy: gather them.
		byName := map[string][]string{}
		var names []string
		for _, h := range sys.hierarchies() {
			pdir, e := h.dir(parentOf(h, parent))
			if e != nil {
				err = errors.Join(err, e)
				continue
			}
			ents, e := os.ReadDir(pdir)
			if e != nil {
				if !errors.Is(e, fs.ErrNotExist) {
					err = errors.Join(err, fmt.Errorf("tjob: reading cgroup %s: %w", pdir, e))
				}
				continue
			}
			for _, ent := range ents {
				if _, _, ok := parseOwner(ent.Name()); !ok || !ent.IsDir() {
					continue
				}
				if byName[ent.Name()] == nil {
					names = append(names, ent.Name())
				}
				byName[ent.Name()] = append(byName[ent.Name()], filepath.Join(pdir, ent.Name()))
			}
		}
		slices.Sort(names)
		for _, name := range names {
			r, e := removeStaleOwner(sys, name, byName[name])
			removed = append(removed, r...)
			err = errors.Join(err, e)
		}
	}
	return removed, err
}

// removeStaleOwner kills and removes an owner's directories, one per
// hierarchy, unless the owner is alive.
func removeStaleOwner(sys *cgroupSystem, name string, dirs []string) ([]string, error) {
	pid, start, _ := parseOwner(name)
	if s, err := procStartTime(pid); err == nil && s == start {
		return nil, nil // alive (and perhaps about to lock its directory)
	}
	// Its flock on every directory proves an owner alive, in any PID
	// namespace. Holding the locks also keeps a second cleaner away.
	var locks []*os.File
	defer func() {
		for _, f := range locks {
			f.Close()
		}
	}()
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("tjob: opening cgroup %s: %w", d, err)
		}
		locks = append(locks, f)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			return nil, nil // held: its owner lives
		}
	}
	var kerr error
	if sys.v2 != nil {
		for _, d := range dirs {
			kerr = errors.Join(kerr, killV2(d, 0))
		}
	} else {
		kerr = killV1(dirs, 0)
	}
	var removed []string
	var rerr error
	for _, d := range dirs {
		r, err := removeTree(d)
		removed = append(removed, r...)
		rerr = errors.Join(rerr, err)
	}
	if rerr != nil {
		return removed, errors.Join(kerr, rerr)
	}
	return removed, nil
}

// Killing and removing, for both versions.

// cgroupProcs lists the processes in cgroup directory dir and, with
// recursive, in the cgroups below it.
func cgroupProcs(dir string, recursive bool) ([]int, error) {
	var pids []int
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	for _, s := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(s); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	if !recursive {
		return pids, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() {
			sub, err := cgroupProcs(filepath.Join(dir, e.Name()), true)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			pids = append(pids, sub...)
		}
	}
	return pids, nil
}

// signalProcs sends sig to every process in the cgroups at dirs and below
// but spare (0: none), and returns how many it signalled. A pid read from
// cgroup.procs may belong to another process by the time it is signalled
// (the first exited, its pid was reused), so each process is pinned with a
// pidfd and signalled only if it is still listed after that: a pid reused
// inside the cgroup is the job's too.
func signalProcs(dirs []string, sig unix.Signal, spare int) (int, error) {
	listed := func() (map[int]bool, error) {
		set := map[int]bool{}
		for _, d := range dirs {
			pids, err := cgroupProcs(d, true)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			for _, p := range pids {
				if p != spare {
					set[p] = true
				}
			}
		}
		return set, nil
	}
	before, err := listed()
	if err != nil || len(before) == 0 {
		return 0, err
	}
	pidfds := map[int]int{}
	defer func() {
		for _, fd := range pidfds {
			unix.Close(fd)
		}
	}()
	for pid := range before {
		fd, err := unix.PidfdOpen(pid, 0)
		switch {
		case err == nil:
			pidfds[pid] = fd
		case err == unix.ENOSYS: // before Linux 5.3: plain kill below
		default:
			delete(before, pid) // gone already
		}
	}
	after, err := listed()
	if err != nil {
		return 0, err
	}
	n := 0
	for pid := range before {
		if !after[pid] {
			continue
		}
		n++
		if fd, ok := pidfds[pid]; ok {
			unix.PidfdSendSignal(fd, sig, nil, 0)
		} else {
			unix.Kill(pid, sig)
		}
	}
	return n, nil
}

// cgroupsEmpty reports whether no process but spare is in dirs or below
// them.
func cgroupsEmpty(dirs []string, spare int) (bool, error) {
	for _, d := range dirs {
		pids, err := cgroupProcs(d, true)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		for _, p := range pids {
			if p != spare {
				return false, nil
			}
		}
	}
	return true, nil
}

// joinCgroup moves process pid into cgroup directory dir.
func joinCgroup(dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("tjob: joining cgroup %s: %w", dir, err)
	}
	return nil
}

// liftThrottles removes the I/O limits of cgroup dir and the cgroups below
// it: v2 io.max, v1 blkio.throttle.*_device.
func liftThrottles(dir string) {
	for _, f := range []string{"io.max", "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
		"blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			dev, _, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			off := dev + " 0"
			if f == "io.max" {
				off = dev + " rbps=max wbps=max riops=max wiops=max"
			}
			os.WriteFile(filepath.Join(dir, f), []byte(off), 0)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			liftThrottles(filepath.Join(dir, e.Name()))
		}
	}
}

// removeTree removes cgroup directory dir and any cgroups below it (a job
// may have made some), deepest first, and returns what it removed. A cgroup
// whose last processes are still exiting is busy for a moment: that, and
// only that, is retried, for up to rmdirTimeout.
func removeTree(dir string) ([]string, error) {
	var removed []string
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	for _, e := range ents {
		if e.IsDir() {
			r, err := removeTree(filepath.Join(dir, e.Name()))
			removed = append(removed, r...)
			if err != nil {
				return removed, err
			}
		}
	}
	deadline := time.Now().Add(rmdirTimeout)
	for {
		err := unix.Rmdir(dir)
		switch {
		case err == nil:
			return append(removed, dir), nil
		case err == unix.ENOENT:
			return removed, nil
		case err == unix.EBUSY && time.Now().Before(deadline):
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return removed, fmt.Errorf("tjob: removing cgroup %s: %w", dir, err)
	}
}

// waitFor polls done, a little less often as time goes by, until it is true
// or timeout has passed.
func waitFor(timeout time.Duration, done func() bool) bool {
	deadline := time.Now().Add(timeout)
	sleep := time.Millisecond
	for {
		if done() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 50*time.Millisecond)
	}
}

// cgroupDirer gives a job's cgroup directory in the hierarchy of a
// controller ("memory", "cpu", "io" or "blkio", "pids", ...), for tests.
type cgroupDirer interface {
	dirOf(controller string) string
}
