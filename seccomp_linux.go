package tjob

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	bpfseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/neildo/tjob/internal/jobinit"
)

// The seccomp filter every jailed job runs under: Docker's default profile
// (the data of github.com/moby/profiles/seccomp), resolved for the
// capabilities a job keeps (jobinit.KeptCaps), this machine's architecture
// and kernel, and compiled to BPF by github.com/elastic/go-seccomp-bpf,
// both pure Go. So a job cannot make namespaces (no new user namespace to
// gain capabilities in), mount, use keyrings, bpf, perf events, kexec or
// kernel modules, or ptrace beyond its own processes (the pid namespace and
// the init's non-dumpable state see to that).
//
// The program is compiled once per process and handed to every job's init,
// which installs it last before it starts the command.
//
// Where the profile says nothing, the answer is EPERM for a system call
// this architecture is known to have, and ENOSYS for one newer than the
// compiler's table, so that a C library falls back to an older call. 32-bit
// system calls on a 64-bit machine are refused (the compiler checks the
// architecture), as are x32 ones.

var seccompProgram = sync.OnceValues(buildSeccomp)

func buildSeccomp() ([]byte, error) {
	policy, err := seccompPolicy(mobyseccomp.DefaultProfile(), keptCapNames(), runtime.GOARCH, kernelVersion())
	if err != nil {
		return nil, fmt.Errorf("tjob: seccomp profile: %w", err)
	}
	insts, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("tjob: seccomp profile: %w", err)
	}
	// The compiler takes only a plain action as the default; the program
	// ends with it, and every path that matched nothing leads there.
	last := len(insts) - 1
	if ret, ok := insts[last].(bpf.RetConstant); !ok || ret.Val != uint32(policy.DefaultAction)|uint32(unix.EPERM) {
		return nil, fmt.Errorf("tjob: seccomp profile: the program does not end with its default action")
	}
	insts[last] = bpf.RetConstant{Val: uint32(bpfseccomp.ActionErrno) | uint32(unix.ENOSYS)}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("tjob: seccomp profile: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	size := len(filter) * int(unsafe.Sizeof(unix.SockFilter{}))
	return slices.Clone(unsafe.Slice((*byte)(unsafe.Pointer(&filter[0])), size)), nil
}

// hotSyscalls come first in the filter, which is read from the top for
// every system call a job makes.
var hotSyscalls = []string{
	"read", "write", "futex", "epoll_wait", "epoll_pwait", "mmap", "munmap", "close", "openat",
	"fstat", "newfstatat", "lseek", "pread64", "pwrite64", "readv", "writev", "brk", "rt_sigaction",
	"rt_sigprocmask", "rt_sigreturn", "nanosleep", "clock_nanosleep", "sched_yield", "getpid",
	"recvfrom", "sendto", "recvmsg", "sendmsg", "poll", "ppoll", "select", "pselect6", "madvise",
	"wait4", "waitid", "statx", "getdents64", "fcntl", "ioctl", "mprotect", "clock_gettime",
}

// seccompPolicy resolves Docker's profile p for a job that keeps caps, on
// goarch, under kernel (major, minor), into a policy of three parts: what
// is allowed, what fails with its own errno, and everything else the
// architecture has, which fails with EPERM.
func seccompPolicy(p *mobyseccomp.Seccomp, caps []string, goarch string, kernel [2]uint64) (*bpfseccomp.Policy, error) {
	info, err := arch.GetInfo(goarch)
	if err != nil {
		return nil, err
	}
	r := resolved{allow: map[string]bool{}, errnos: map[bpfseccomp.Action][]string{}, hasErrno: map[string]bool{}}
	for _, rule := range p.Syscalls {
		if !ruleApplies(rule, caps, goarch, kernel) {
			continue
		}
		if err := r.add(rule, info); err != nil {
			return nil, err
		}
	}
	return r.policy(info), nil
}

// resolved is the profile's rules that apply, by what they do.
type resolved struct {
	allow       map[string]bool // allowed whatever the arguments
	conditional []bpfseccomp.NameWithConditions
	errnos      map[bpfseccomp.Action][]string // failing with their own errno
	hasErrno    map[string]bool
}

// add takes in a rule's system calls that the architecture has.
func (r *resolved) add(rule *mobyseccomp.Syscall, info *arch.Info) error {
	action, err := ruleAction(rule)
	if err != nil {
		return err
	}
	for _, name := range rule.Names {
		if _, known := info.SyscallNames[name]; !known {
			continue // another architecture's, or newer than the table
		}
		switch {
		case action == bpfseccomp.ActionAllow && len(rule.Args) == 0:
			r.allow[name] = true
		case action == bpfseccomp.ActionAllow:
			conds, err := conditions(name, rule.Args)
			if err != nil {
				return err
			}
			r.conditional = append(r.conditional, bpfseccomp.NameWithConditions{Name: name, Conditions: conds})
		case len(rule.Args) == 0 && !r.hasErrno[name]:
			r.errnos[action] = append(r.errnos[action], name)
			r.hasErrno[name] = true
		}
		// A conditional errno is left to the EPERM of the policy, as strict.
	}
	return nil
}

// policy is the compiler's policy: the allowed calls (the hot ones first),
// the conditional ones, those with an errno of their own, then everything
// else the architecture has, including the conditional calls whose
// conditions did not hold, as EPERM.
func (r *resolved) policy(info *arch.Info) *bpfseccomp.Policy {
	var allowed, rest []string
	for _, n := range hotSyscalls {
		if r.allow[n] {
			allowed = append(allowed, n)
		}
	}
	for n := range r.allow {
		if !slices.Contains(hotSyscalls, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	policy := &bpfseccomp.Policy{
		DefaultAction: bpfseccomp.ActionErrno, // EPERM; made ENOSYS in buildSeccomp
		Syscalls:      []bpfseccomp.SyscallGroup{{Names: append(allowed, rest...), Action: bpfseccomp.ActionAllow}},
	}
	if len(r.conditional) > 0 {
		policy.Syscalls = append(policy.Syscalls, bpfseccomp.SyscallGroup{NamesWithCondtions: r.conditional, Action: bpfseccomp.ActionAllow})
	}
	actions := slices.Sorted(maps.Keys(r.errnos))
	for _, a := range actions {
		policy.Syscalls = append(policy.Syscalls, bpfseccomp.SyscallGroup{Names: slices.Sorted(slices.Values(r.errnos[a])), Action: a})
	}
	var denied []string
	for name := range info.SyscallNames {
		if !r.allow[name] && !r.hasErrno[name] {
			denied = append(denied, name)
		}
	}
	slices.Sort(denied)
	policy.Syscalls = append(policy.Syscalls, bpfseccomp.SyscallGroup{Names: denied, Action: bpfseccomp.ActionErrno | bpfseccomp.Action(unix.EPERM)})
	return policy
}

// ruleApplies evaluates a rule's includes and excludes as Docker does: every
// included capability must be kept, and no excluded one; the architecture
// must be among the included (and not the excluded) ones; the kernel must
// be at least the minimum.
func ruleApplies(r *mobyseccomp.Syscall, caps []string, goarch string, kernel [2]uint64) bool {
	if inc := r.Includes; inc != nil {
		for _, c := range inc.Caps {
			if !slices.Contains(caps, c) {
				return false
			}
		}
		if len(inc.Arches) > 0 && !slices.Contains(inc.Arches, goarch) {
			return false
		}
		if k := inc.MinKernel; k != nil && (kernel[0] < k.Kernel || kernel[0] == k.Kernel && kernel[1] < k.Major) {
			return false
		}
	}
	if exc := r.Excludes; exc != nil {
		for _, c := range exc.Caps {
			if slices.Contains(caps, c) {
				return false
			}
		}
		if slices.Contains(exc.Arches, goarch) {
			return false
		}
		if k := exc.MinKernel; k != nil && !(kernel[0] < k.Kernel || kernel[0] == k.Kernel && kernel[1] < k.Major) {
			return false
		}
	}
	return true
}

// ruleAction is the compiler's action for a rule.
func ruleAction(r *mobyseccomp.Syscall) (bpfseccomp.Action, error) {
	switch r.Action {
	case specs.ActAllow:
		return bpfseccomp.ActionAllow, nil
	case specs.ActErrno:
		errno := unix.EPERM
		if r.ErrnoRet != nil {
			errno = unix.Errno(*r.ErrnoRet)
		}
		return bpfseccomp.ActionErrno | bpfseccomp.Action(errno), nil
	}
	return 0, fmt.Errorf("rule for %v: action %s is not supported", r.Names, r.Action)
}

// conditions turns a rule's argument checks into the compiler's.
func conditions(name string, args []specs.LinuxSeccompArg) (bpfseccomp.ArgumentConditions, error) {
	var out bpfseccomp.ArgumentConditions
	for _, a := range args {
		c := bpfseccomp.Condition{Argument: uint32(a.Index), Value: a.Value}
		switch a.Op {
		case specs.OpEqualTo:
			c.Operation = bpfseccomp.Equal
		case specs.OpNotEqual:
			c.Operation = bpfseccomp.NotEqual
		case specs.OpLessThan:
			c.Operation = bpfseccomp.LessThan
		case specs.OpLessEqual:
			c.Operation = bpfseccomp.LessOrEqual
		case specs.OpGreaterThan:
			c.Operation = bpfseccomp.GreaterThan
		case specs.OpGreaterEqual:
			c.Operation = bpfseccomp.GreaterOrEqual
		case specs.OpMaskedEqual:
			if a.ValueTwo != 0 {
				return nil, fmt.Errorf("%s: masked comparison with %d is not supported", name, a.ValueTwo)
			}
			c.Operation = bpfseccomp.BitsNotSet // (arg & mask) == 0
		default:
			return nil, fmt.Errorf("%s: comparison %s is not supported", name, a.Op)
		}
		out = append(out, c)
	}
	return out, nil
}

// capNames names the capabilities of jobinit.KeptCaps as the profile does.
var capNames = map[uintptr]string{
	unix.CAP_CHOWN: "CAP_CHOWN", unix.CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE", unix.CAP_FSETID: "CAP_FSETID",
	unix.CAP_FOWNER: "CAP_FOWNER", unix.CAP_NET_RAW: "CAP_NET_RAW", unix.CAP_SETGID: "CAP_SETGID",
	unix.CAP_SETUID: "CAP_SETUID", unix.CAP_SETFCAP: "CAP_SETFCAP", unix.CAP_SETPCAP: "CAP_SETPCAP",
	unix.CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE", unix.CAP_SYS_CHROOT: "CAP_SYS_CHROOT",
	unix.CAP_KILL: "CAP_KILL", unix.CAP_AUDIT_WRITE: "CAP_AUDIT_WRITE",
}

func keptCapNames() []string {
	var names []string
	for _, c := range jobinit.KeptCaps {
		names = append(names, capNames[c])
	}
	return names
}

// kernelVersion is the running kernel's major and minor version.
func kernelVersion() [2]uint64 {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return [2]uint64{}
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	var v [2]uint64
	for i := 0; i < 2 && i < len(parts); i++ {
		digits := strings.TrimRightFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' })
		v[i], _ = strconv.ParseUint(digits, 10, 64)
	}
	return v
}
