package jobinit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What the init gives up before the command starts, and why.
//
// Capabilities and no_new_privs belong to each thread, not to the process,
// and a Go program has several threads before its first line runs. Dropping
// them on one thread left the others with every capability, and a job
// could borrow them through ptrace. So the init drops them on every thread:
// with syscall.AllThreadsSyscall where the runtime allows it (programs
// built without cgo, such as cmd/tjob-init), or else by re-executing itself
// from the hardened thread (stage 2), so that every thread of the new image
// starts from that thread's credentials.
//
// The init is also made non-dumpable, so that nothing in the job may attach
// to it or read its memory (/proc/1/mem) even as the same user; it joins a
// new, empty session keyring, so that the job cannot reach the keys of the
// process that started it; and every file descriptor but 0, 1 and 2 is
// closed on exec.

// KeptCaps is Docker's default capability set, less CAP_MKNOD: what a job
// may keep. The rest (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_NET_ADMIN, ...)
// would let it undo the jail or reach the host. Docker keeps CAP_MKNOD
// because its devices cgroup stops the nodes being opened; without one, a
// job could make a node for the disk and read what MaskPaths hides.
var KeptCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER,
	unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID,
	unix.CAP_SETFCAP, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE,
	unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
}

// dropBoundingSet removes every capability but KeptCaps from this thread's
// bounding set: what the command, forked from this thread, can ever have.
func dropBoundingSet() error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	keep := capMask()
	for c := uintptr(0); c <= last; c++ {
		if keep[c/32]&(1<<(c%32)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// capMask is KeptCaps as the two 32-bit words of capget(2).
func capMask() [2]uint32 {
	var mask [2]uint32
	for _, c := range KeptCaps {
		mask[c/32] |= 1 << (c % 32)
	}
	return mask
}

// reducedCaps reads this thread's capabilities and narrows them to
// KeptCaps, for capset(2).
func reducedCaps() (*unix.CapUserHeader, *[2]unix.CapUserData, error) {
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]unix.CapUserData{}
	if err := unix.Capget(hdr, &data[0]); err != nil {
		return nil, nil, fmt.Errorf("reading capabilities: %w", err)
	}
	mask := capMask()
	for i := range data {
		data[i].Effective &= mask[i]
		data[i].Permitted &= mask[i]
		data[i].Inheritable &= mask[i]
	}
	return hdr, data, nil
}

// errNeedsReexec: the runtime cannot change every thread (cgo), so the init
// re-executes itself instead.
var errNeedsReexec = errors.New("re-exec to harden every thread")

// hardenAllThreads sets no_new_privs and narrows the capabilities of every
// thread of this process to KeptCaps. The caller has dropped this thread's
// bounding set.
func hardenAllThreads() error {
	hdr, data, err := reducedCaps()
	if err != nil {
		return err
	}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
	if errno == syscall.ENOTSUP {
		return errNeedsReexec
	}
	if errno != 0 {
		return fmt.Errorf("no_new_privs: %w", errno)
	}
	_, _, errno = syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno != 0 {
		return fmt.Errorf("dropping capabilities: %w", errno)
	}
	return nil
}

// hardenThisThread does what hardenAllThreads does, for this thread only:
// the thread that re-executes the init, whose credentials every thread of
// the new image inherits.
func hardenThisThread() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	hdr, data, err := reducedCaps()
	if err != nil {
		return err
	}
	if err := unix.Capset(hdr, &data[0]); err != nil {
		return fmt.Errorf("dropping capabilities: %w", err)
	}
	return nil
}

// reexec replaces the init with itself as stage 2, carrying cfg in a memfd
// at StateFD. It returns only on failure.
func reexec(cfg []byte) error {
	fd, err := unix.MemfdCreate("tjob-init-config", 0)
	if err != nil {
		return fmt.Errorf("re-exec: %w", err)
	}
	if _, err := unix.Write(fd, cfg); err != nil {
		return fmt.Errorf("re-exec: %w", err)
	}
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return fmt.Errorf("re-exec: %w", err)
	}
	if fd != StateFD {
		if err := unix.Dup3(fd, StateFD, 0); err != nil {
			return fmt.Errorf("re-exec: %w", err)
		}
		unix.Close(fd)
	}
	for _, fd := range []int{ConfigFD, ReportFD} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("re-exec: %w", err)
		}
	}
	env := []string{MarkerEnv + "=2"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, MarkerEnv+"=") {
			env = append(env, kv)
		}
	}
	// /proc is the jail's by now; its self/exe still names this binary.
	return fmt.Errorf("re-exec: %w", unix.Exec("/proc/self/exe", []string{Arg0}, env))
}

// finalSteps runs on the thread that forks the command, after the
// capabilities are dropped: nothing of the job may attach to the init, the
// job gets a keyring of its own and only fds 0, 1 and 2.
func finalSteps() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the init non-dumpable: %w", err)
	}
	// KEYCTL_JOIN_SESSION_KEYRING with no name: a new anonymous keyring.
	if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
		return fmt.Errorf("new session keyring: %w", errno)
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("closing inherited files: %w", err)
	}
	return nil
}

// loadSeccomp installs the filter on this thread, which forks the command:
// the command inherits it. no_new_privs is set already.
func loadSeccomp(prog []byte) error {
	const size = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(prog) == 0 {
		return nil
	}
	if len(prog)%size != 0 || len(prog)/size > 0xffff {
		return fmt.Errorf("seccomp filter of %d bytes is not a whole program", len(prog))
	}
	filter := make([]unix.SockFilter, len(prog)/size)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&filter[0])), len(prog)), prog)
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("installing the seccomp filter: %w", errno)
	}
	return nil
}

func lastCap() (uintptr, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("cap_last_cap: %w", err)
	}
	return uintptr(n), nil
}
