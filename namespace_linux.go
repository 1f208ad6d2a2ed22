package tjob

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/neildo/tjob/internal/jobinit"
)

// The jail, from the side of the process that starts jobs. A jailed job runs
// under an init of its own (internal/jobinit): this same binary, started
// again with a marker in its argument and environment that the package's
// init function below spots, so that any program that imports tjob (a test
// binary too) can run jobs with no extra call. The init is born in new PID,
// mount, network, UTS and IPC namespaces, and a user namespace when
// Job.UserNS asks for one; it sets them up from the inside, gives up its
// privileges, and starts the command. See internal/jobinit for what it
// does, and in which order.

func init() {
	if jobinit.IsInit() {
		os.Exit(jobinit.Main())
	}
}

// IDMap maps the user and group IDs 0 to Size-1 inside a job's user
// namespace to the host's IDs HostID to HostID+Size-1.
type IDMap struct {
	HostID uint32
	Size   uint32
}

// validateUserNS checks Job.UserNS.
func validateUserNS(j *Job) error {
	m := j.UserNS
	switch {
	case m.Size == 0 && m.HostID == 0:
		return nil
	case m.Size == 0:
		return invalid("UserNS", "maps no IDs (Size 0) from host ID %d", m.HostID)
	case j.NoJail:
		return invalid("UserNS", "needs the jail, but NoJail is set")
	case m.HostID == 0:
		return invalid("UserNS", "maps the job's root to the host's (HostID 0)")
	case uint64(m.HostID)+uint64(m.Size) > 1<<32-1:
		return invalid("UserNS", "host IDs %d to %d go past the largest ID %d", m.HostID, uint64(m.HostID)+uint64(m.Size)-1, uint32(1<<32-2))
	}
	return nil
}

// openInit opens the init's binary: Job.InitPath, or the tjob-init beside
// the running program, or the running program. The init is started
// through this file descriptor, not a path, so that it starts in a user
// namespace whose root may not search the directories on the way to the
// binary (go test builds in a 0700 directory).
func openInit(j *Job) (*os.File, error) {
	path := j.InitPath
	if path == "" {
		path = defaultInit()
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tjob: opening the init's binary: %w", err)
	}
	return f, nil
}

// defaultInit is the tjob-init beside the running program, or the running
// program.
var defaultInit = sync.OnceValue(func() string {
	if exe, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(exe), jobinit.Arg0)
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return beside
		}
	}
	return "/proc/self/exe"
})
