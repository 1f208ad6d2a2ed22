package jobinit

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The spawner (stage 0) starts the init of a job that has a user namespace
// of its own. The init must be born in that namespace, and Go forks a
// process into a new user namespace by a full fork, not a vfork: in a large
// process with many threads (a server with a thousand jobs) that fork copies
// the page tables, write-protects the whole heap and makes every thread
// fault its pages back, which cost the server more than the rest of a job's
// start. So the library vforks this small spawner, in the job's cgroup,
// which forks the init cheaply as a child of the library's process
// (CLONE_PARENT), says which pid it got, and exits.
//
// The spawner reads nothing of the job: it waits for one byte on ConfigFD
// (the library's word that it is in the job's cgroup, which the init then
// inherits), and hands ConfigFD, ReportFD, ExeFD and TmpFD on to the init.

// spawn runs the spawner and returns its exit code.
func spawn(report *os.File) int {
	fail := func(err error) int {
		json.NewEncoder(report).Encode(Report{Err: NewError(err)})
		return 127
	}
	hostID, size, err := parseUserNS(os.Getenv(UserNSEnv))
	if err != nil {
		return fail(err)
	}
	cfg := os.NewFile(ConfigFD, "config")
	var b [1]byte
	if _, err := io.ReadFull(cfg, b[:]); err != nil {
		return 137 // the library is gone
	}
	files := []*os.File{os.Stdin, os.Stdout, os.Stderr, cfg, report, os.NewFile(ExeFD, "exe")}
	if isOpen(TmpFD) {
		files = append(files, os.NewFile(TmpFD, "tmp"))
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, MarkerEnv+"=") && !strings.HasPrefix(kv, UserNSEnv+"=") {
			env = append(env, kv)
		}
	}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: size}}
	proc, err := os.StartProcess(fmt.Sprintf("/proc/self/fd/%d", ExeFD), []string{Arg0}, &os.ProcAttr{
		Env:   append(env, MarkerEnv+"=1"),
		Files: files,
		Sys: &syscall.SysProcAttr{
			Cloneflags:                 JailCloneFlags | syscall.CLONE_NEWUSER | syscall.CLONE_PARENT,
			UidMappings:                m,
			GidMappings:                m,
			GidMappingsEnableSetgroups: true,
			// Root of the namespace before it execs, so that the init
			// keeps its capabilities there.
			Credential: &syscall.Credential{Uid: 0, Gid: 0},
		},
	})
	if err != nil {
		return fail(execError("the init", err))
	}
	json.NewEncoder(report).Encode(Report{Init: proc.Pid})
	return 0
}

// JailCloneFlags are the namespaces of a jail, the user namespace aside.
const JailCloneFlags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET |
	syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC

// UserNSValue is the UserNSEnv value for an ID map.
func UserNSValue(hostID, size uint32) string { return fmt.Sprintf("%d:%d", hostID, size) }

func parseUserNS(s string) (hostID, size int, err error) {
	h, z, ok := strings.Cut(s, ":")
	hostID, err1 := strconv.Atoi(h)
	size, err2 := strconv.Atoi(z)
	if !ok || err1 != nil || err2 != nil || size <= 0 {
		return 0, 0, fmt.Errorf("spawner: %s %q is not HOSTID:SIZE", UserNSEnv, s)
	}
	return hostID, size, nil
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}
