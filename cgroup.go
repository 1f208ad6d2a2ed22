package tjob

import (
	"fmt"
	"os"
)

// cgroup is one job's control group. The job's process is placed in it
// before the command runs: by clone3(CLONE_INTO_CGROUP) where the kernel
// can (IntoFile), or by the jail's shim joining it before it execs the
// command (ProcsFiles).
//
// STUB: the cgroups work (issue 3) replaces this file.
type cgroup interface {
	// String names the cgroup for messages.
	String() string
	// IntoFile is the cgroup's directory opened for CLONE_INTO_CGROUP, or
	// nil where that does not work (cgroup v1). Remove closes it.
	IntoFile() *os.File
	// ProcsFiles are the cgroup.procs files the shim writes "0" into to
	// join the cgroup before the command runs; nil when IntoFile is used.
	ProcsFiles() []string
	// Kill kills every process left in the cgroup and returns once they
	// are gone.
	Kill() error
	// Usage reads what the job used and whether the kernel killed one of
	// its processes for lack of memory. Call it after Kill, before Remove.
	Usage() (u Usage, oomKilled bool)
	// Remove deletes the cgroup.
	Remove() error
}

// newCgroup makes the job's cgroup with its limits; nil when j.NoCgroup.
func newCgroup(j *Job) (cgroup, error) {
	if j.NoCgroup {
		return nil, nil
	}
	return nil, nil
}

// validateLimits rejects negative or absurd limits before anything starts.
func validateLimits(j *Job) error {
	for _, l := range []struct {
		name string
		v    int
	}{{"CPUPercent", j.CPUPercent}, {"MemoryMB", j.MemoryMB}, {"ReadBPS", j.ReadBPS}, {"WriteBPS", j.WriteBPS}, {"PidsMax", j.PidsMax}} {
		if l.v < 0 {
			return fmt.Errorf("tjob: %w: %s is negative (%d)", ErrInvalid, l.name, l.v)
		}
	}
	return nil
}
