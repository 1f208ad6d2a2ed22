//go:build linux

package tjob

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/neildo/tjob/internal/jobinit"
)

// process is a started job's process and everything that must be released
// with it: its output pipe, its cgroup and, when jailed, the pipes to the
// jail's init.
//
// The process is waited for through a pidfd in the runtime's poller, not by
// a thread blocked in wait(2): a server with thousands of jobs that sleep
// keeps a handful of threads.
type process struct {
	*child         // the command, or the jail's init
	jailed    bool // the init runs the command in namespaces and reports its end
	cg        cgroup
	startedAt time.Time

	pipe     *os.File            // read end of the job's stdout and stderr
	copied   chan struct{}       // closed when the spool has taken all the output
	lifeline *os.File            // the init's config pipe: closing it tells the init we are gone
	ended    chan jobinit.Report // the init's report of how the command ended; closed at EOF
}

// child is a process this one started, and waits for through a pidfd.
type child struct {
	pid    int
	pidfd  *os.File    // non-blocking, in the runtime's poller
	os     *os.Process // released once the process is reaped; nil for an adopted one
	reaped sync.Once
	status struct{ exit, sig int } // how it ended, once reaped
}

// pipeSize is the output pipe's buffer: 1 MiB, the default most a user may
// ask for (/proc/sys/fs/pipe-max-size).
const pipeSize = 1 << 20

// result is how a job's process ended.
type result struct {
	exit      int64
	signal    syscall.Signal
	oomKilled bool
	usage     Usage
	endedAt   time.Time
	err       error
}

// startProcess starts the job's command in its cgroup and, unless NoJail,
// in its jail, with its output going into out.
func startProcess(j *Job, path string, out *spool) (_ *process, err error) {
	cg, err := newCgroup(j)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && cg != nil {
			cg.Kill(0)
			err = errors.Join(err, cg.Remove())
		}
	}()
	cred, err := lookupUser(j.User, j.UserNS)
	if err != nil {
		return nil, err
	}
	null, err := os.Open(os.DevNull) // the job's stdin
	if err != nil {
		return nil, fmt.Errorf("tjob: %w", err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("tjob: output pipe: %w", err)
	}
	defer pw.Close() // the child has its copy
	// A larger pipe lets a job that writes fast hand over more per wake-up.
	// Best effort: the pipe works at any size.
	if rc, err := pr.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}

	p := &process{cg: cg, pipe: pr, copied: make(chan struct{}), jailed: !j.NoJail}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if cg != nil && cg.IntoFile() != nil {
		attr.UseCgroupFD = true
		attr.CgroupFD = int(cg.IntoFile().Fd())
	}
	// The init is needed for the jail, and to put the command in a cgroup
	// the kernel cannot place the process into at birth.
	if p.jailed || (cg != nil && cg.IntoFile() == nil) {
		err = p.startInit(j, path, cred, attr, []*os.File{null, pw, pw})
	} else {
		if cg != nil {
			err = cg.LimitCPU()
		}
		if err == nil {
			err = p.startDirect(j, path, cred, attr, []*os.File{null, pw, pw})
		}
	}
	if err != nil {
		pr.Close()
		return nil, err
	}
	go func() {
		out.fill(pr)
		close(p.copied)
	}()
	return p, nil
}

// spawn starts a process and takes a pidfd of it to wait on.
func (p *process) spawn(path string, argv []string, attr *os.ProcAttr) error {
	pidfd := -1
	attr.Sys.PidFD = &pidfd
	proc, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return err
	}
	p.startedAt = time.Now()
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		proc.Kill()
		return fmt.Errorf("tjob: pidfd: %w", err)
	}
	p.child = &child{pid: proc.Pid, os: proc, pidfd: os.NewFile(uintptr(pidfd), "pidfd")}
	return nil
}

// startDirect runs the command itself: no jail, and a cgroup (if any) that
// clone3 places it in.
func (p *process) startDirect(j *Job, path string, cred *syscall.Credential, attr *syscall.SysProcAttr, files []*os.File) error {
	attr.Credential = cred
	if j.Dir != "" {
		// The child's chdir error would be reported as a failed exec.
		if fi, err := os.Stat(j.Dir); err != nil {
			return fmt.Errorf("tjob: %w", &fs.PathError{Op: "chdir", Path: j.Dir, Err: errors.Unwrap(err)})
		} else if !fi.IsDir() {
			return fmt.Errorf("tjob: %w", &fs.PathError{Op: "chdir", Path: j.Dir, Err: syscall.ENOTDIR})
		}
	}
	err := p.spawn(path, j.argv(), &os.ProcAttr{Dir: j.Dir, Env: j.Env, Files: files, Sys: attr})
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "fork/exec" {
		err = &fs.PathError{Op: "exec", Path: path, Err: pe.Err}
	}
	if err != nil {
		return fmt.Errorf("tjob: %w", err)
	}
	return nil
}

// startInit runs the init (see internal/jobinit), sends it the job, and
// waits for its word that the command runs, or why not.
func (p *process) startInit(j *Job, path string, cred *syscall.Credential, attr *syscall.SysProcAttr, files []*os.File) error {
	cfg, err := p.initConfig(j, path, cred)
	if err != nil {
		return err
	}
	exe, err := openInit(j)
	if err != nil {
		return err
	}
	defer exe.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("tjob: init pipe: %w", err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return fmt.Errorf("tjob: init pipe: %w", err)
	}
	// fds 3, 4 and 5 in the init. It is run through its fd: the path to
	// the binary may not be open to the job's user.
	files = append(files, cfgR, repW, exe)
	if cfg.Tmp {
		tree, err := detachTree(j.TmpDir)
		if err != nil {
			for _, f := range []*os.File{cfgR, cfgW, repR, repW} {
				f.Close()
			}
			return err
		}
		defer tree.Close()
		files = append(files, tree) // fd 6
	}
	// The init is small: one P, a tight heap, and no second of sleep at
	// exit in a binary built with -race.
	env := []string{"GOMAXPROCS=1", "GOGC=50", "GORACE=atexit_sleep_ms=0", jobinit.ProtocolEnv + "=" + jobinit.Protocol}
	if spawner := p.jailed && j.UserNS.Size > 0; spawner {
		// A spawner makes the user namespace (see spawn_linux.go).
		env = append(env, jobinit.MarkerEnv+"=0", jobinit.UserNSEnv+"="+jobinit.UserNSValue(j.UserNS.HostID, j.UserNS.Size))
	} else {
		env = append(env, jobinit.MarkerEnv+"=1")
		if p.jailed {
			attr.Cloneflags = jobinit.JailCloneFlags
		}
	}
	err = p.spawn(fmt.Sprintf("/proc/self/fd/%d", jobinit.ExeFD), []string{jobinit.Arg0}, &os.ProcAttr{Env: env, Files: files, Sys: attr})
	cfgR.Close()
	repW.Close()
	if err != nil {
		cfgW.Close()
		repR.Close()
		return fmt.Errorf("tjob: starting the init: %w", err)
	}
	p.lifeline = cfgW
	rep := bufio.NewReader(repR)
	switch err := p.handshake(j, cfg, !attr.UseCgroupFD, rep); {
	case err == errExeced:
		repR.Close()
		return nil
	case err != nil:
		p.abort()
		repR.Close()
		return err
	}
	// The init counts against the job's memory; when the job runs out, the
	// kernel should kill the job's process, not the init that reports on
	// it. The command was forked before this, so it keeps the usual score.
	// Best effort: it needs CAP_SYS_RESOURCE.
	os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.pid), []byte("-999"), 0)
	p.ended = make(chan jobinit.Report, 1)
	go func() {
		defer repR.Close()
		defer close(p.ended)
		if m, err := readReport(rep); err == nil {
			p.ended <- m
		}
	}()
	return nil
}

// initConfig is what the init is told of the job.
func (p *process) initConfig(j *Job, path string, cred *syscall.Credential) (*jobinit.Config, error) {
	cfg := &jobinit.Config{
		Path:      path,
		Args:      j.argv(),
		Dir:       j.Dir,
		Env:       j.Env,
		Jail:      p.jailed,
		Hostname:  shortID(j.ID),
		MaskPaths: append([]string{j.spoolDir()}, j.MaskPaths...),
		ReadOnly:  j.ReadOnlyRoot,
		Tmp:       j.TmpDir != "",
	}
	if cred != nil {
		cfg.Credential = &jobinit.Credential{UID: cred.Uid, GID: cred.Gid}
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if p.jailed && !j.NoSeccomp {
		prog, err := seccompProgram()
		if err != nil {
			return nil, err
		}
		cfg.Seccomp = prog
	}
	return cfg, nil
}

// errExeced: the init became the command (no jail).
var errExeced = errors.New("the init execs the command")

// handshake takes the init from its start to the command's: it puts it in
// the job's cgroup where the kernel could not (join), takes over the init a
// spawner started, sends the job, and sets the CPU limit once the init is
// ready. It returns errExeced when the init became the command.
func (p *process) handshake(j *Job, cfg *jobinit.Config, join bool, rep *bufio.Reader) error {
	if join && p.cg != nil {
		// cgroup v1: the init (or its spawner) waits for its job, so it
		// runs nothing of the job before it is in the job's cgroup.
		if err := p.cg.Join(p.pid); err != nil {
			return err
		}
	}
	if p.jailed && j.UserNS.Size > 0 {
		if err := p.adoptInit(rep); err != nil {
			return err
		}
	}
	if !p.jailed && p.cg != nil {
		// Without a jail the init execs the command at once.
		if err := p.cg.LimitCPU(); err != nil {
			return err
		}
	}
	if err := json.NewEncoder(p.lifeline).Encode(cfg); err != nil {
		return fmt.Errorf("tjob: sending the job to the init: %w", err)
	}

	// The init's first word says whether the command runs. Without a jail
	// the init becomes the command and its report pipe closes on exec:
	// EOF means it runs. In the jail it first says that it is ready, and
	// waits for the CPU limit.
	first, err := readReport(rep)
	if err == nil && first.Ready {
		if p.cg != nil {
			err = p.cg.LimitCPU()
		}
		if err == nil {
			_, err = p.lifeline.Write([]byte("g"))
		}
		if err != nil {
			return fmt.Errorf("tjob: %w", err)
		}
		first, err = readReport(rep)
	}
	switch {
	case err == io.EOF && !p.jailed:
		return errExeced
	case err != nil:
		return fmt.Errorf("tjob: the init did not start %s: %w", j.Path, p.initDied(err))
	case first.Err != nil:
		return fmt.Errorf("tjob: %w", first.Err.Err())
	}
	return nil
}

// adoptInit lets the spawner go and takes the init it started as the
// job's process: a child of this process (CLONE_PARENT), so its pid is
// pinned until this process reaps it.
func (p *process) adoptInit(rep *bufio.Reader) error {
	if _, err := p.lifeline.Write([]byte("s")); err != nil {
		return fmt.Errorf("tjob: the init's spawner: %w", err)
	}
	m, err := readReport(rep)
	switch {
	case err != nil:
		return fmt.Errorf("tjob: the init's spawner: %w", p.initDied(err))
	case m.Err != nil:
		return fmt.Errorf("tjob: %w", m.Err.Err())
	case m.Init == 0:
		return errors.New("tjob: the init's spawner said nothing of the init")
	}
	if exit, sig := p.child.reap(); exit != 0 || sig != 0 {
		return fmt.Errorf("tjob: the init's spawner ended with status %d, signal %d", exit, sig)
	}
	fd, err := unix.PidfdOpen(m.Init, unix.PIDFD_NONBLOCK)
	if err != nil {
		unix.Kill(m.Init, unix.SIGKILL)
		return fmt.Errorf("tjob: the init: %w", err)
	}
	p.child = &child{pid: m.Init, pidfd: os.NewFile(uintptr(fd), "pidfd")}
	return nil
}

// detachTree clones the mount of directory dir, detached (open_tree(2)),
// for the init to mount in the job's namespace: the init needs no path to
// it, which in a user namespace it might not be allowed to follow.
func detachTree(dir string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("tjob: TmpDir: %w", &fs.PathError{Op: "open_tree", Path: dir, Err: err})
	}
	return os.NewFile(uintptr(fd), dir), nil
}

func readReport(r *bufio.Reader) (jobinit.Report, error) {
	var m jobinit.Report
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
		return m, fmt.Errorf("the init's report: %w", err)
	}
	return m, nil
}

// abort ends an init that failed to start the command.
func (p *process) abort() {
	if p.lifeline != nil {
		p.lifeline.Close()
	}
	p.signal(unix.SIGKILL)
	p.reap()
}

// initDied explains an init that ended without a word.
func (p *process) initDied(err error) error {
	if err != io.EOF {
		return err
	}
	exit, sig := p.reap()
	if sig != 0 {
		return fmt.Errorf("init killed by signal %d", sig)
	}
	return fmt.Errorf("init exited with status %d", exit)
}

// signal sends sig to the process itself, through its pidfd: never to
// another process that got its pid after it was reaped.
func (p *child) signal(sig unix.Signal) {
	if rc, err := p.pidfd.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.PidfdSendSignal(int(fd), sig, nil, 0) })
	}
}

// reap waits for the process to end and reaps it, once, without holding a
// thread: the runtime's poller wakes the waiter when the pidfd becomes
// readable. It returns the exit code, or the signal that killed it.
func (p *child) reap() (exit, sig int) {
	p.reaped.Do(func() {
		rc, err := p.pidfd.SyscallConn()
		if err != nil {
			p.status.exit = -1
			return
		}
		var info siginfoChild
		var werr error
		rc.Read(func(fd uintptr) bool {
			info = siginfoChild{}
			werr = unix.Waitid(unix.P_PIDFD, int(fd), (*unix.Siginfo)(unsafe.Pointer(&info)), unix.WEXITED|unix.WNOHANG, nil)
			return werr != unix.EAGAIN && werr != unix.EINTR && (werr != nil || info.Pid != 0)
		})
		switch {
		case werr != nil:
			p.status.exit = -1
		case info.Code == cldExited:
			p.status.exit = int(info.Status)
		default: // killed, or dumped core
			p.status.sig = int(info.Status)
		}
		p.pidfd.Close()
		if p.os != nil {
			p.os.Release()
		}
	})
	return p.status.exit, p.status.sig
}

// siginfoChild is the part of siginfo_t that waitid(2) fills for a child,
// on 64-bit Linux.
type siginfoChild struct {
	Signo, Errno, Code int32
	_                  int32
	Pid                int32
	UID                uint32
	Status             int32
	_                  [100]byte
}

const cldExited = 1 // CLD_EXITED

// terminate asks the job to end: SIGTERM to each of its processes. Where
// the job has a cgroup, tjob signals every process in it itself, as
// systemd's control-group kill mode does, sparing the jail's init: the
// kernel delivers the signal at once, however little CPU the job's cgroup
// lets the init have to pass it on. Without a cgroup, the init forwards it
// to the command's process group, or the group gets it directly.
func (p *process) terminate() {
	switch {
	case p.cg != nil:
		if p.cg.Signal(unix.SIGTERM, p.initPid()) == nil {
			return
		}
		fallthrough // the cgroup is gone: the group, or the init, then
	case p.jailed:
		p.signal(unix.SIGTERM)
	default:
		syscall.Kill(-p.pid, syscall.SIGTERM)
	}
}

// initPid is the jail's init, which must outlive the command to report how
// it ended; 0 without a jail.
func (p *process) initPid() int {
	if p.jailed {
		return p.pid
	}
	return 0
}

// kill ends the command and everything it started, now, but not the jail's
// init: it reports how the command ended, which is all it does from then
// on, and exits.
func (p *process) kill() {
	if p.cg != nil {
		p.cg.Kill(p.initPid())
	}
	if !p.jailed {
		syscall.Kill(-p.pid, syscall.SIGKILL)
		p.signal(unix.SIGKILL)
	} else if p.cg == nil {
		p.killAll() // no cgroup to tell the init's processes apart
	}
}

// killAll ends the job and its init, now.
func (p *process) killAll() {
	if p.cg != nil {
		p.cg.Kill(0)
	}
	if !p.jailed {
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	p.signal(unix.SIGKILL)
}

// wait waits for the job's process to end, then kills what it left behind,
// takes the rest of its output and removes its cgroup.
func (p *process) wait() result {
	var res result
	exit, sig := p.reap()
	res.endedAt = time.Now()
	res.exit, res.signal = int64(exit), syscall.Signal(sig)
	if sig != 0 {
		res.exit = 128 + int64(sig)
	}
	if p.ended != nil {
		// The init reports the command's own end; its own exit status
		// only matters when it was killed before it could.
		if m, ok := <-p.ended; ok && m.Ended {
			res.exit, res.signal = m.Exit, syscall.Signal(m.Signal)
		}
	}
	if p.lifeline != nil {
		p.lifeline.Close()
	}

	// Nothing the job started may outlive it.
	if p.cg != nil {
		if err := p.cg.Kill(0); err != nil {
			res.err = errors.Join(res.err, err)
		}
	}
	if !p.jailed {
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}

	timer := time.NewTimer(waitDelay)
	select {
	case <-p.copied:
	case <-timer.C:
		// Something outside the job's reach holds the pipe open.
		p.pipe.Close()
		<-p.copied
	}
	timer.Stop()
	p.pipe.Close()

	if p.cg != nil {
		res.usage, res.oomKilled = p.cg.Usage()
		if err := p.cg.Remove(); err != nil {
			res.err = errors.Join(res.err, err)
		}
	}
	return res
}

// lookupUser turns Job.User into credentials; nil when empty. In a user
// namespace the IDs are the namespace's, and must be mapped.
func lookupUser(name string, ns IDMap) (*syscall.Credential, error) {
	cred, err := parseUser(name)
	if err != nil || cred == nil || ns.Size == 0 {
		return cred, err
	}
	if cred.Uid >= ns.Size || cred.Gid >= ns.Size {
		return nil, invalid("User", "%q: IDs %d:%d are outside the job's user namespace (0 to %d)", name, cred.Uid, cred.Gid, ns.Size-1)
	}
	return cred, nil
}

func parseUser(name string) (*syscall.Credential, error) {
	if name == "" {
		return nil, nil
	}
	uidStr, gidStr, hasGID := strings.Cut(name, ":")
	if uid, err := strconv.ParseUint(uidStr, 10, 32); err == nil {
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		if hasGID {
			gid, err := strconv.ParseUint(gidStr, 10, 32)
			if err != nil {
				return nil, invalid("User", "%q: bad group ID", name)
			}
			cred.Gid = uint32(gid)
		} else if u, err := user.LookupId(uidStr); err == nil {
			if gid, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
				cred.Gid = uint32(gid)
			}
		}
		return cred, nil
	}
	if hasGID {
		return nil, invalid("User", "%q: use a name or UID[:GID]", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, &ConfigError{Field: "User", Reason: fmt.Sprintf("%q: %v", name, err), Err: err}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
