package tjob

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The jail: every job runs in new PID, mount, network, UTS and IPC
// namespaces. Go cannot run code between fork and exec, so the namespaces'
// setup runs in a shim: this same binary, started again through
// /proc/self/exe with an explicit marker. The package's init function spots
// the marker and runs the shim instead of the program, so any program that
// imports tjob (a test binary too) can run jobs with no extra call.
//
// The shim is the namespace's PID 1. It mounts a /proc of its own, makes all
// mounts private, hides the masked paths, brings up loopback, sets the
// hostname, drops privileges, starts the command, forwards signals to it,
// reaps orphans, and reports the command's end over a pipe, so the job's
// Status is the same with or without the jail. When the shim exits, the
// kernel kills whatever is left in the namespace.

const (
	shimArg0 = "tjob-jail-init"
	shimEnv  = "TJOB_JAIL_INIT_V1"

	jailCloneFlags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET |
		syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC

	shimConfigFD = 3 // the job, as JSON; then held open as a lifeline
	shimReportFD = 4 // shimMsg lines back to the parent
)

// shimConfig is what the parent tells the shim.
type shimConfig struct {
	Path       string
	Args       []string
	Dir        string
	Env        []string
	Jail       bool     // set up namespaces and be their init; else join and exec
	Hostname   string   // inside the jail
	MaskPaths  []string // covered by empty read-only mounts inside the jail
	ReadOnly   bool     // the host's file system is read-only but for Dir and a private /tmp
	ProcsFiles []string // cgroup.procs files to join before the command runs
	Credential *syscall.Credential
}

// shimMsg is one line the shim reports.
type shimMsg struct {
	Err    string `json:",omitempty"` // the command could not start
	Pid    int    `json:",omitempty"` // the command runs, as this pid in the jail
	Ended  bool   `json:",omitempty"` // the command ended, with Exit and Signal
	Exit   int64  `json:",omitempty"`
	Signal int    `json:",omitempty"`
}

func readShimMsg(r *bufio.Reader) (shimMsg, error) {
	var m shimMsg
	line, err := r.ReadBytes('\n')
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return m, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return m, err
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("jail report: %w", err)
	}
	return m, nil
}

func init() {
	// Both the argument and the environment must carry the marker: a
	// program that happens to be named like the shim is not one.
	if len(os.Args) != 1 || os.Args[0] != shimArg0 || os.Getenv(shimEnv) != "1" {
		return
	}
	// Privileges are dropped for this thread only, and the command is
	// forked from it, so the shim must stay on it.
	runtime.LockOSThread()
	os.Exit(shimMain())
}

// shimMain runs the shim and returns its exit code.
func shimMain() int {
	// The parent passed fds 3 and 4 without close-on-exec; the command
	// must not inherit them.
	unix.CloseOnExec(shimConfigFD)
	unix.CloseOnExec(shimReportFD)
	cfgFile := os.NewFile(shimConfigFD, "config")
	report := os.NewFile(shimReportFD, "report")
	fail := func(err error) int {
		json.NewEncoder(report).Encode(shimMsg{Err: err.Error()})
		return 127
	}

	var cfg shimConfig
	dec := json.NewDecoder(cfgFile)
	if err := dec.Decode(&cfg); err != nil {
		return fail(fmt.Errorf("jail: reading job: %w", err))
	}
	// Signals that arrive before the command runs are kept for it.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)

	for _, f := range cfg.ProcsFiles {
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			return fail(fmt.Errorf("joining cgroup: %w", err))
		}
	}
	if !cfg.Jail {
		return fail(execCommand(&cfg))
	}
	if err := setupJail(&cfg); err != nil {
		return fail(err)
	}
	if err := harden(); err != nil {
		return fail(err)
	}
	// Change directory here rather than in the child, so that a bad Dir
	// is reported as such and not as a failed exec.
	if cfg.Dir != "" {
		if err := os.Chdir(cfg.Dir); err != nil {
			return fail(err)
		}
	}
	proc, err := os.StartProcess(cfg.Path, cfg.Args, &os.ProcAttr{
		Env:   cfg.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: cfg.Credential},
	})
	if err != nil {
		return fail(startError(err))
	}
	pid := proc.Pid
	json.NewEncoder(report).Encode(shimMsg{Pid: pid})

	go forward(sigs, pid)
	go func() {
		// The parent holds the config pipe open for the job's life; EOF
		// means it died. Take the whole namespace down with us.
		io.Copy(io.Discard, io.MultiReader(dec.Buffered(), cfgFile))
		unix.Kill(-1, unix.SIGKILL)
		os.Exit(137)
	}()

	ws := reap(pid)
	exit, sig := exitCode(ws)
	json.NewEncoder(report).Encode(shimMsg{Ended: true, Exit: exit, Signal: int(sig)})
	return int(exit)
}

// forwardedSignals are passed on to the command's process group. Others
// (SIGKILL above all) end the shim, and with it the namespace.
var forwardedSignals = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
}

func forward(sigs <-chan os.Signal, pid int) {
	for s := range sigs {
		sig := s.(syscall.Signal)
		// The command leads its process group unless it left it; then
		// it still gets the signal itself.
		if err := unix.Kill(-pid, sig); err != nil {
			unix.Kill(pid, sig)
		}
	}
}

// reap waits for every child, as an init must, until the command itself
// ends, and returns its wait status.
func reap(pid int) syscall.WaitStatus {
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// No children left (cannot happen before the command
			// ends): report a plain failure.
			return syscall.WaitStatus(1 << 8)
		}
		if wpid == pid {
			return syscall.WaitStatus(ws)
		}
	}
}

// startError turns os.StartProcess's "fork/exec" wording into what a user
// would expect: "exec /bin/x: permission denied".
func startError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "fork/exec" {
		return fmt.Errorf("exec %s: %w", pe.Path, pe.Err)
	}
	return err
}

// execCommand replaces the shim with the command: used without a jail, where
// the shim only joins the cgroup first. It returns only on failure.
func execCommand(cfg *shimConfig) error {
	if cfg.Dir != "" {
		if err := os.Chdir(cfg.Dir); err != nil {
			return err
		}
	}
	if c := cfg.Credential; c != nil {
		if err := unix.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := unix.Setgid(int(c.Gid)); err != nil {
			return fmt.Errorf("setgid %d: %w", c.Gid, err)
		}
		if err := unix.Setuid(int(c.Uid)); err != nil {
			return fmt.Errorf("setuid %d: %w", c.Uid, err)
		}
	}
	err := unix.Exec(cfg.Path, cfg.Args, cfg.Env)
	return fmt.Errorf("exec %s: %w", cfg.Path, err)
}

// setupJail prepares the namespaces the shim was born in.
func setupJail(cfg *shimConfig) error {
	if err := setupMounts(cfg); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("jail: setting hostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("jail: bringing up loopback: %w", err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// keptCaps is Docker's default capability set, less CAP_MKNOD: what a job
// may keep. The rest (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_NET_ADMIN, ...)
// would let it undo the jail or reach the host. Docker keeps CAP_MKNOD
// because its devices cgroup stops the nodes being opened; without one, a
// job could make a node for the disk and read what MaskPaths hides.
var keptCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER,
	unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID,
	unix.CAP_SETFCAP, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE,
	unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
}

// harden sets no_new_privs and drops every capability but keptCaps, for
// this thread, from which the command is forked.
func harden() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("jail: no_new_privs: %w", err)
	}
	last, err := lastCap()
	if err != nil {
		return err
	}
	keep := map[uintptr]bool{}
	for _, c := range keptCaps {
		keep[c] = true
	}
	var mask [2]uint32
	for c := uintptr(0); c <= last; c++ {
		if keep[c] {
			mask[c/32] |= 1 << (c % 32)
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("jail: dropping capability %d: %w", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("jail: reading capabilities: %w", err)
	}
	for i := range data {
		data[i].Effective &= mask[i]
		data[i].Permitted &= mask[i]
		data[i].Inheritable &= mask[i]
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("jail: dropping capabilities: %w", err)
	}
	return nil
}

func lastCap() (uintptr, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("jail: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("jail: cap_last_cap: %w", err)
	}
	return uintptr(n), nil
}
