package tjob

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is a started job's process and everything that must be released
// with it: its output pipe, its cgroup and, when jailed, the pipes to the
// jail's shim.
type process struct {
	cmd       *exec.Cmd
	jailed    bool // the shim runs the command in namespaces and reports its end
	cg        cgroup
	startedAt time.Time

	pipe     *os.File      // read end of the job's stdout and stderr
	copied   chan struct{} // closed when the spool has taken all the output
	lifeline *os.File      // the shim's config pipe: closing it tells the shim we are gone
	ended    chan shimMsg  // the shim's report of how the command ended; closed at EOF
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
	cred, err := lookupUser(j.User)
	if err != nil {
		return nil, err
	}
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

	p := &process{cg: cg, pipe: pr, copied: make(chan struct{})}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if cg != nil && cg.IntoFile() != nil {
		attr.UseCgroupFD = true
		attr.CgroupFD = int(cg.IntoFile().Fd())
	}
	p.jailed = !j.NoJail
	// The shim is needed for the jail, and to join a cgroup the kernel
	// cannot place the process into at birth.
	if p.jailed || (cg != nil && cg.IntoFile() == nil) {
		err = p.startShim(j, path, cred, attr, pw)
	} else {
		err = p.startDirect(j, path, cred, attr, pw)
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

// startDirect runs the command itself: no jail, and a cgroup (if any) that
// clone3 places it in.
func (p *process) startDirect(j *Job, path string, cred *syscall.Credential, attr *syscall.SysProcAttr, out *os.File) error {
	attr.Credential = cred
	if j.Dir != "" {
		// The child's chdir error would be reported as a failed exec.
		if fi, err := os.Stat(j.Dir); err != nil {
			return fmt.Errorf("tjob: chdir %s: %w", j.Dir, errors.Unwrap(err))
		} else if !fi.IsDir() {
			return fmt.Errorf("tjob: chdir %s: %w", j.Dir, syscall.ENOTDIR)
		}
	}
	p.cmd = &exec.Cmd{
		Path:        path,
		Args:        j.argv(),
		Dir:         j.Dir,
		Env:         j.Env,
		Stdout:      out,
		Stderr:      out,
		SysProcAttr: attr,
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("tjob: %w", err)
	}
	p.startedAt = time.Now()
	return nil
}

// startShim runs the shim (this same binary, see namespace_linux.go), sends
// it the job, and waits for its word that the command runs, or why not.
func (p *process) startShim(j *Job, path string, cred *syscall.Credential, attr *syscall.SysProcAttr, out *os.File) error {
	cfg := shimConfig{
		Path:       path,
		Args:       j.argv(),
		Dir:        j.Dir,
		Env:        j.Env,
		Jail:       p.jailed,
		Hostname:   shortID(j.ID),
		MaskPaths:  append([]string{j.spoolDir()}, j.MaskPaths...),
		ReadOnly:   j.ReadOnlyRoot,
		Credential: cred,
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if p.cg != nil {
		cfg.ProcsFiles = p.cg.ProcsFiles()
	}
	if p.jailed {
		attr.Cloneflags = jailCloneFlags
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("tjob: shim pipe: %w", err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return fmt.Errorf("tjob: shim pipe: %w", err)
	}
	p.cmd = &exec.Cmd{
		Path: "/proc/self/exe",
		Args: []string{shimArg0},
		// The shim is small: one P, a tight heap, and no second of sleep at
		// exit in a binary built with -race.
		Env:         []string{shimEnv + "=1", "GOMAXPROCS=1", "GOGC=50", "GORACE=atexit_sleep_ms=0"},
		Stdout:      out,
		Stderr:      out,
		ExtraFiles:  []*os.File{cfgR, repW}, // fd 3 and fd 4 in the shim
		SysProcAttr: attr,
	}
	err = p.cmd.Start()
	cfgR.Close()
	repW.Close()
	if err != nil {
		cfgW.Close()
		repR.Close()
		return fmt.Errorf("tjob: starting jail: %w", err)
	}
	p.startedAt = time.Now()
	p.lifeline = cfgW
	if err := json.NewEncoder(cfgW).Encode(&cfg); err != nil {
		p.abort()
		repR.Close()
		return fmt.Errorf("tjob: sending job to jail: %w", err)
	}

	// The shim's first word says whether the command runs. In exec mode
	// (no jail) the shim becomes the command and its report pipe closes on
	// exec: EOF means it runs.
	rep := bufio.NewReader(repR)
	first, err := readShimMsg(rep)
	switch {
	case err == io.EOF && !p.jailed:
		repR.Close()
		return nil
	case err != nil:
		p.abort()
		repR.Close()
		return fmt.Errorf("tjob: jail did not start %s: %w", j.Path, p.shimDied(err))
	case first.Err != "":
		p.abort()
		repR.Close()
		return fmt.Errorf("tjob: %s", first.Err)
	}
	// The jail's init counts against the job's memory; when the job runs
	// out, the kernel should kill the job's process, not the init that
	// reports on it. The command was forked before this, so it keeps the
	// usual score. Best effort: it needs CAP_SYS_RESOURCE.
	os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.pid()), []byte("-999"), 0)
	p.ended = make(chan shimMsg, 1)
	go func() {
		defer repR.Close()
		defer close(p.ended)
		if m, err := readShimMsg(rep); err == nil {
			p.ended <- m
		}
	}()
	return nil
}

// abort ends a shim that failed to start the command.
func (p *process) abort() {
	if p.lifeline != nil {
		p.lifeline.Close()
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// shimDied explains a shim that ended without a word.
func (p *process) shimDied(err error) error {
	if err != io.EOF {
		return err
	}
	if p.cmd.ProcessState != nil {
		return fmt.Errorf("jail exited: %s", p.cmd.ProcessState)
	}
	return errors.New("jail exited")
}

func (p *process) pid() int { return p.cmd.Process.Pid }

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
		p.cmd.Process.Signal(syscall.SIGTERM)
	default:
		syscall.Kill(-p.pid(), syscall.SIGTERM)
	}
}

// initPid is the jail's init, which must outlive the command to report how
// it ended; 0 without a jail.
func (p *process) initPid() int {
	if p.jailed {
		return p.pid()
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
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		p.cmd.Process.Kill()
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
		syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
	p.cmd.Process.Kill()
}

// wait waits for the job's process to end, then kills what it left behind,
// takes the rest of its output and removes its cgroup.
func (p *process) wait() result {
	var res result
	p.cmd.Wait()
	res.endedAt = time.Now()
	res.exit, res.signal = exitCode(p.cmd.ProcessState.Sys().(syscall.WaitStatus))
	if p.ended != nil {
		// The jail's init reports the command's own end; its own exit
		// status only matters when it was killed before it could.
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
		syscall.Kill(-p.pid(), syscall.SIGKILL)
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

// lookupUser turns Job.User into credentials; nil when empty.
func lookupUser(name string) (*syscall.Credential, error) {
	if name == "" {
		return nil, nil
	}
	uidStr, gidStr, hasGID := strings.Cut(name, ":")
	if uid, err := strconv.ParseUint(uidStr, 10, 32); err == nil {
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), NoSetGroups: false}
		if hasGID {
			gid, err := strconv.ParseUint(gidStr, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("tjob: %w: User %q: bad group ID", ErrInvalid, name)
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
		return nil, fmt.Errorf("tjob: %w: User %q: use a name or UID[:GID]", ErrInvalid, name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("tjob: %w: User %q: %v", ErrInvalid, name, err)
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
