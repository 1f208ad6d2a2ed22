package jobinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IsInit reports whether this process was started as the init: both its
// argument and its environment carry the marker, so that a program that
// happens to be named like the init is not one.
func IsInit() bool {
	stage := os.Getenv(MarkerEnv)
	return len(os.Args) == 1 && os.Args[0] == Arg0 && (stage == "0" || stage == "1" || stage == "2")
}

// Main runs the init and returns its exit code.
func Main() int {
	// Namespaces, capabilities and the seccomp filter are set on this
	// thread, and the command is forked from it: the init must stay on it.
	runtime.LockOSThread()
	// It was started through a file descriptor, so the kernel named it
	// after that ("5"): give it its own name, for ps in the job.
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&[]byte(Arg0 + "\x00")[0])), 0, 0, 0)
	// The library passed these without close-on-exec; the command must not
	// inherit them.
	unix.CloseOnExec(ConfigFD)
	unix.CloseOnExec(ReportFD)
	unix.CloseOnExec(ExeFD)
	report := os.NewFile(ReportFD, "report")
	fail := func(err error) int {
		json.NewEncoder(report).Encode(Report{Err: NewError(err)})
		return 127
	}

	if v := os.Getenv(ProtocolEnv); v != Protocol {
		return fail(fmt.Errorf("the init speaks protocol %s, the library %q: build tjob-init from the same tjob as the program", Protocol, v))
	}
	if os.Getenv(MarkerEnv) == "0" {
		return spawn(report)
	}
	raw, lifeline, err := readConfig()
	if err != nil {
		return fail(err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fail(fmt.Errorf("init: reading the job: %w", err))
	}
	if !cfg.Jail {
		return fail(execCommand(&cfg))
	}
	// Signals that arrive before the command runs are kept for it.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)

	if os.Getenv(MarkerEnv) == "1" {
		if err := setupJail(&cfg); err != nil {
			return fail(err)
		}
		switch err := hardenAllThreads(); {
		case errors.Is(err, errNeedsReexec):
			if err := hardenThisThread(); err != nil {
				return fail(err)
			}
			return fail(reexec(raw))
		case err != nil:
			return fail(err)
		}
	}
	// Here, in stage 1 or 2, every thread has only KeptCaps and
	// no_new_privs.
	children := make(chan os.Signal, 1)
	signal.Notify(children, unix.SIGCHLD)
	json.NewEncoder(report).Encode(Report{Ready: true})
	if err := waitGo(lifeline); err != nil {
		return 137 // the library is gone
	}
	pid, err := startCommand(&cfg)
	if err != nil {
		return fail(err)
	}
	json.NewEncoder(report).Encode(Report{Pid: pid})

	go forward(sigs, pid)
	go func() {
		// The library holds the config pipe open for the job's life; EOF
		// means its process died. Take the whole namespace down with us.
		io.Copy(io.Discard, lifeline)
		unix.Kill(-1, unix.SIGKILL)
		os.Exit(137)
	}()

	exit, sig := reap(pid, children)
	json.NewEncoder(report).Encode(Report{Ended: true, Exit: exit, Signal: int(sig)})
	return int(exit)
}

// readConfig reads the job: from the config pipe in stage 1, from the memfd
// stage 1 left in stage 2. It also returns what is left of the config pipe,
// to be watched for EOF.
func readConfig() (raw []byte, lifeline io.Reader, err error) {
	cfgFile := os.NewFile(ConfigFD, "config")
	if os.Getenv(MarkerEnv) == "2" {
		unix.CloseOnExec(StateFD)
		state := os.NewFile(StateFD, "state")
		defer state.Close()
		raw, err = io.ReadAll(state)
		if err != nil {
			return nil, nil, fmt.Errorf("init: reading the job: %w", err)
		}
		return raw, cfgFile, nil
	}
	dec := json.NewDecoder(cfgFile)
	var msg json.RawMessage
	if err := dec.Decode(&msg); err != nil {
		return nil, nil, fmt.Errorf("init: reading the job: %w", err)
	}
	return msg, io.MultiReader(dec.Buffered(), cfgFile), nil
}

// waitGo waits for the library's "g" on the config pipe.
func waitGo(r io.Reader) error {
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return err
		}
		if b[0] == 'g' {
			return nil
		}
	}
}

// setupJail prepares, in stage 1 and with the privileges of the new
// namespaces, what the job will see: its mounts, hostname, loopback and
// cgroup namespace. Then it drops this thread's bounding set.
func setupJail(cfg *Config) error {
	if err := setupMounts(cfg); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return pathErr("sethostname", cfg.Hostname, err)
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("init: bringing up loopback: %w", err)
	}
	// The library placed this process in the job's cgroup: a cgroup
	// namespace rooted there shows the job its own cgroup as "/", and
	// nothing of the host's tree.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("init: cgroup namespace: %w", err)
	}
	return dropBoundingSet()
}

// startCommand makes the init unreachable and starts the command under the
// seccomp filter, in its directory, as its user.
func startCommand(cfg *Config) (int, error) {
	// Change directory here rather than in the child, so that a bad Dir
	// is reported as such and not as a failed exec.
	if cfg.Dir != "" {
		if err := os.Chdir(cfg.Dir); err != nil {
			return 0, pathErr("chdir", cfg.Dir, err)
		}
	}
	if err := finalSteps(); err != nil {
		return 0, err
	}
	if err := loadSeccomp(cfg.Seccomp); err != nil {
		return 0, err
	}
	proc, err := os.StartProcess(cfg.Path, cfg.Args, &os.ProcAttr{
		Env:   cfg.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: credential(cfg.Credential)},
	})
	if err != nil {
		return 0, execError(cfg.Path, err)
	}
	return proc.Pid, nil
}

func credential(c *Credential) *syscall.Credential {
	if c == nil {
		return nil
	}
	return &syscall.Credential{Uid: c.UID, Gid: c.GID}
}

// execError turns os.StartProcess's "fork/exec" into what a user expects:
// "exec /bin/x: permission denied".
func execError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: "exec", Path: path, Err: pe.Err}
	}
	return err
}

// forwardedSignals are passed on to the command's process group. Others
// (SIGKILL above all) end the init, and with it the namespace.
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
// ends, and returns how it ended, as a shell reports it. It waits on
// SIGCHLD rather than in wait(2): a Go program blocked in a system call
// keeps its runtime polling every 10 ms to take the processor back, and a
// thousand sleeping jobs would so cost the host a hundred thousand wake-ups
// a second.
func reap(pid int, children <-chan os.Signal) (exit int64, sig syscall.Signal) {
	for {
		for {
			var ws unix.WaitStatus
			wpid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				// No children left (cannot happen before the
				// command ends): report a plain failure.
				return 1, 0
			}
			if wpid == 0 {
				break // none has ended (more): wait for SIGCHLD
			}
			if wpid != pid {
				continue
			}
			if ws.Signaled() {
				return 128 + int64(ws.Signal()), ws.Signal()
			}
			return int64(ws.ExitStatus()), 0
		}
		<-children
	}
}

// execCommand replaces the init with the command: used without a jail,
// where the init only exists to be placed in the job's cgroup first. It
// returns only on failure.
func execCommand(cfg *Config) error {
	if cfg.Dir != "" {
		if err := os.Chdir(cfg.Dir); err != nil {
			return pathErr("chdir", cfg.Dir, err)
		}
	}
	if c := cfg.Credential; c != nil {
		if err := unix.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := unix.Setgid(int(c.GID)); err != nil {
			return fmt.Errorf("setgid %d: %w", c.GID, err)
		}
		if err := unix.Setuid(int(c.UID)); err != nil {
			return fmt.Errorf("setuid %d: %w", c.UID, err)
		}
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("closing inherited files: %w", err)
	}
	return pathErr("exec", cfg.Path, unix.Exec(cfg.Path, cfg.Args, cfg.Env))
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
