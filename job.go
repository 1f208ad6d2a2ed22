//go:build linux

package tjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultGracePeriod is how long Stop waits after SIGTERM before SIGKILL.
const DefaultGracePeriod = 10 * time.Second

// initReportTimeout bounds how long Stop waits, once it has killed the
// command, for the jail's init to report how the command ended. The init
// needs little CPU for that, but it shares the job's CPU limit and the
// machine may be loaded; only an init that is stuck takes this long.
const initReportTimeout = 30 * time.Second

// waitDelay bounds how long the end of a job waits for its output pipe to
// close once the job's process has exited and everything left behind has been
// killed. Only a process that escaped both the jail and the cgroup can hold
// the pipe that long.
const waitDelay = 2 * time.Second

// Job is a command run as a job: a process with resource limits (a cgroup of
// its own) and isolation (namespaces of its own), whose combined stdout and
// stderr are kept from the first byte for any number of readers.
//
// Set the fields, then call Run once. Fields must not change after Run.
// Zero values mean "no limit" or "the default".
type Job struct {
	// ID names the job: its cgroup, its output file and, inside the jail,
	// its hostname (the first 8 characters). NewJob sets a random UUID.
	ID string

	// Path is the command to run. A Path with no slash is looked up in
	// $PATH, as os/exec does.
	Path string

	// Args holds the command line, including the command as Args[0], as in
	// os/exec.Cmd. When empty, Path is used alone.
	Args []string

	// Dir is the working directory; empty means the caller's.
	Dir string

	// Env is the environment, as "KEY=value"; nil means the caller's.
	Env []string

	// CPUPercent is the CPU the job may use, in percent of one CPU: 20 is a
	// fifth of one CPU, 250 is two and a half CPUs.
	CPUPercent int

	// MemoryMB is the most memory the job may use, in MiB (1<<20 bytes),
	// swap included where the kernel accounts for it. A job that needs more
	// is killed by the kernel and its Status says OOMKilled.
	MemoryMB int

	// ReadBPS and WriteBPS are the most bytes per second the job may read
	// from and write to the block devices behind its working directory and
	// the root file system (or IODevices). The kernel throttles direct and
	// write-back I/O; reads served from the page cache are not throttled.
	ReadBPS  int
	WriteBPS int

	// PidsMax is the most processes and threads the job may have at once:
	// a guard against fork bombs.
	PidsMax int

	// IODevices, when set, replaces the automatic choice of block devices
	// for ReadBPS and WriteBPS: each is a device file such as "/dev/sda" or
	// a "MAJOR:MINOR" pair.
	IODevices []string

	// CgroupParent is the cgroup, relative to the cgroup file system's root,
	// under which job cgroups are made. Empty means inside the caller's own
	// cgroup, or "/tjob" when the caller is in the root cgroup.
	CgroupParent string

	// NoCgroup runs the job without a cgroup of its own; the limits must
	// then be zero. Needed where the caller may not make cgroups.
	NoCgroup bool

	// NoJail runs the job without namespaces of its own: it sees the
	// host's processes, network and hostname.
	NoJail bool

	// MaskPaths are files and directories hidden from the job inside the
	// jail: each is covered by an empty, read-only mount. The job's own
	// output spool directory is always masked.
	MaskPaths []string

	// ReadOnlyRoot makes the host's file system read-only inside the jail,
	// but for Dir and a private /tmp: TmpDir, or else an empty one in
	// memory (counted against MemoryMB). Without it the job may write
	// wherever its user may.
	ReadOnlyRoot bool

	// TmpDir, with ReadOnlyRoot, is a host directory the job sees as its
	// /tmp: a workspace on disk, which ReadBPS and WriteBPS throttle and
	// which may hold more than the job's memory. Nothing else of the host
	// is writable to the job. With UserNS it must belong to the job's
	// host IDs.
	TmpDir string

	// User runs the job as another user: a name, "UID" or "UID:GID".
	// Empty means the caller's user. With UserNS, the IDs are those of the
	// job's user namespace.
	User string

	// UserNS, when its Size is not zero, runs the jailed job in a user
	// namespace of its own, whose IDs 0 to Size-1 are the host's HostID to
	// HostID+Size-1. The job's root is then root only over what the jail
	// made for it; on the host it is an unprivileged user, and the
	// kernel's own checks keep it from root's files, sockets, keys and
	// cgroups. Files the job must write (Dir) must belong to its host IDs.
	UserNS IDMap

	// InitPath is the program that is the jail's init (cmd/tjob-init).
	// Empty means a tjob-init beside the running program, if there is one,
	// else the running program itself, started again: that works with no
	// file to ship, but a program that initialises much (gRPC, say)
	// starts slower than the small tjob-init.
	InitPath string

	// NoSeccomp runs a jailed job without its seccomp filter (Docker's
	// default profile, see seccomp_linux.go).
	NoSeccomp bool

	// GracePeriod is how long Stop waits after SIGTERM before SIGKILL.
	// Zero means DefaultGracePeriod.
	GracePeriod time.Duration

	// SpoolDir is where the job's output is kept while the Job exists, in
	// a file named after ID. Empty means a "tjob" folder in os.TempDir().
	// The file belongs to the Job: Close removes it, unless KeepOutput.
	SpoolDir string

	// KeepOutput leaves the output file in SpoolDir when the Job is
	// closed, for OpenOutput to read and RemoveOutput to remove: a server
	// can so keep the output of many ended jobs without keeping the Jobs.
	KeepOutput bool

	// MaxOutput is the most bytes of output kept; past it the job runs on
	// as before, its output is read and dropped, and Status says where it
	// was cut. Zero means no limit.
	MaxOutput int64

	mu            sync.Mutex
	state         State
	stopRequested bool
	closed        bool
	status        Status // final once state is past StateRunning

	started chan struct{} // closed when Run has started the job or failed
	done    chan struct{} // closed when the final Status is published
	proc    *process      // set while running
	out     *spool
}

// NewJob returns a Job that runs path with args when Run is called.
func NewJob(path string, args ...string) *Job {
	return &Job{
		ID:   newID(),
		Path: path,
		Args: append([]string{path}, args...),
	}
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Run starts the job and returns at once with a channel that delivers the
// final Status when the job has ended, and is then closed. When the job
// cannot start, the Status says why in Error, and arrives at once.
func (j *Job) Run() <-chan Status {
	ch := make(chan Status, 1)
	j.mu.Lock()
	if j.state != StateNotStarted || j.closed {
		err := ErrAlreadyStarted
		if j.closed {
			err = ErrClosed
		}
		st := j.snapshot()
		j.mu.Unlock()
		st.Error = jobError(j.ID, err)
		ch <- st
		close(ch)
		return ch
	}
	j.state = StateStarting
	if j.ID == "" {
		j.ID = newID()
	}
	j.started = make(chan struct{})
	j.done = make(chan struct{})
	j.status.Cmd = j.cmdline()
	j.mu.Unlock()

	proc, out, err := j.start()

	j.mu.Lock()
	j.out = out
	if err != nil {
		now := time.Now().UnixNano()
		j.state = StateFailed
		j.status.Started, j.status.Stopped = now, now
		j.status.Exit = -1
		j.status.Error = err
		st := j.snapshot()
		j.mu.Unlock()
		close(j.started)
		close(j.done)
		ch <- st
		close(ch)
		return ch
	}
	j.proc = proc
	j.state = StateRunning
	j.status.Pid = proc.pid
	j.status.Started = proc.startedAt.UnixNano()
	j.mu.Unlock()
	close(j.started)

	go j.wait(ch)
	return ch
}

// start validates the job, makes its spool and cgroup and starts its process.
// It holds no lock: it only reads the configuration, which must not change.
func (j *Job) start() (*process, *spool, error) {
	if err := j.validate(); err != nil {
		return nil, nil, err
	}
	path, err := j.resolvePath()
	if err != nil {
		return nil, nil, err
	}
	out, err := newSpool(j.spoolDir(), j.ID, j.MaxOutput)
	if err != nil {
		return nil, nil, err
	}
	proc, err := startProcess(j, path, out)
	if err != nil {
		// The spool stays so that Lines and readers work on a failed job;
		// it is empty. Close removes it.
		out.file.Close()
		out.finish()
		return nil, out, err
	}
	return proc, out, nil
}

// Validate reports what is wrong with the job's configuration, as Run
// would, without starting anything: an error that matches ErrInvalid and
// names the field. It does not look for the command.
func (j *Job) Validate() error {
	return j.validate()
}

func (j *Job) validate() error {
	if j.Path == "" {
		return invalid("Path", "is empty: no command to run")
	}
	if strings.IndexByte(j.Path, 0) >= 0 {
		return invalid("Path", "%q contains a NUL byte", j.Path)
	}
	for i, a := range j.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return invalid(fmt.Sprintf("Args[%d]", i), "contains a NUL byte")
		}
	}
	if err := checkID(j.ID); err != nil {
		return err
	}
	if j.GracePeriod < 0 {
		return invalid("GracePeriod", "%v is negative", j.GracePeriod)
	}
	if j.NoJail && (j.ReadOnlyRoot || len(j.MaskPaths) > 0) {
		return invalid("ReadOnlyRoot", "and MaskPaths need the jail, but NoJail is set")
	}
	if j.TmpDir != "" && !j.ReadOnlyRoot {
		return invalid("TmpDir", "needs ReadOnlyRoot")
	}
	if j.MaxOutput < 0 {
		return invalid("MaxOutput", "%d is negative", j.MaxOutput)
	}
	if err := validateUserNS(j); err != nil {
		return err
	}
	if err := checkLimits(j.limits()); err != nil {
		return err
	}
	return checkCgroupUse(j)
}

// checkID refuses a job ID that cannot name its files and cgroup.
func checkID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return invalid("ID", "%q is not a file name", id)
	}
	return nil
}

// resolvePath finds the executable as os/exec would, so that a missing
// command is reported before anything is made for it.
func (j *Job) resolvePath() (string, error) {
	if strings.Contains(j.Path, "/") {
		return j.Path, nil
	}
	p, err := exec.LookPath(j.Path)
	if err != nil {
		return "", fmt.Errorf("tjob: %w", err)
	}
	return p, nil
}

func (j *Job) spoolDir() string {
	if j.SpoolDir != "" {
		return j.SpoolDir
	}
	return filepath.Join(os.TempDir(), "tjob")
}

func (j *Job) argv() []string {
	if len(j.Args) == 0 {
		return []string{j.Path}
	}
	return j.Args
}

func (j *Job) cmdline() string {
	return strings.Join(j.argv(), " ")
}

func (j *Job) grace() time.Duration {
	if j.GracePeriod > 0 {
		return j.GracePeriod
	}
	return DefaultGracePeriod
}

// wait follows the job to its end and publishes the final Status.
func (j *Job) wait(ch chan<- Status) {
	res := j.proc.wait()

	j.mu.Lock()
	j.state = StateExited
	st := &j.status
	st.Stopped = res.endedAt.UnixNano()
	st.Exit = res.exit
	st.Signal = res.signal
	st.OOMKilled = res.oomKilled
	st.Usage = res.usage
	st.StopRequested = j.stopRequested
	st.Error = errors.Join(res.err, j.out.error())
	final := j.snapshot()
	j.mu.Unlock()

	j.out.finish()
	close(j.done)
	ch <- final
	close(ch)
}

// Stop ends the job: SIGTERM to the job, then, if it has not ended after
// GracePeriod, SIGKILL to everything it left. Stop returns when the job has
// ended. Stopping a job that has ended returns nil; stopping a job that was
// never run returns ErrNotStarted.
func (j *Job) Stop() error {
	return j.StopWithin(0)
}

// StopWithin is Stop with a grace period of its own; zero means the job's
// GracePeriod.
func (j *Job) StopWithin(grace time.Duration) error {
	if grace <= 0 {
		grace = j.grace()
	}
	return j.stop(grace)
}

// Kill ends the job at once, as Stop does after its grace period: SIGKILL
// to everything it runs, with no SIGTERM first. Kill returns when the job
// has ended; killing a job that has ended returns nil, one that was never
// run ErrNotStarted.
func (j *Job) Kill() error {
	return j.stop(0)
}

// stop sends SIGTERM and waits up to grace for the job to end, then
// SIGKILLs it; a zero grace SIGKILLs it at once.
func (j *Job) stop(grace time.Duration) error {
	j.mu.Lock()
	if j.state == StateNotStarted {
		j.mu.Unlock()
		return jobError(j.ID, ErrNotStarted)
	}
	started, done := j.started, j.done
	j.mu.Unlock()

	<-started
	j.mu.Lock()
	if j.state != StateRunning {
		j.mu.Unlock()
		return nil
	}
	j.stopRequested = true
	proc := j.proc
	j.mu.Unlock()

	timer := time.NewTimer(grace)
	defer timer.Stop()
	if grace > 0 {
		proc.terminate()
		select {
		case <-done:
			return nil
		case <-timer.C:
		}
	}
	proc.kill()
	// The init reports how the command ended as soon as it gets the CPU
	// to; one that cannot is ended with everything else.
	timer.Reset(initReportTimeout)
	select {
	case <-done:
		return nil
	case <-timer.C:
	}
	proc.killAll()
	<-done
	return nil
}

// Done returns a channel that is closed when the job has ended and its final
// Status is known. It returns nil before Run.
func (j *Job) Done() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done
}

// Status returns the job's status now, with its output split into Lines. It
// is safe to call from any goroutine at any time. Reading the lines reads the
// whole output; use Summary where only the state is needed.
func (j *Job) Status() Status {
	j.mu.Lock()
	st := j.snapshot()
	out := j.out
	closed := j.closed
	j.mu.Unlock()
	if out != nil && !closed {
		lines, err := out.lines()
		if err != nil && st.Error == nil {
			st.Error = err
		}
		st.Lines = lines
	}
	return st
}

// Summary returns the job's status without its Lines. Its cost does not
// depend on how much the job has written.
func (j *Job) Summary() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.snapshot()
}

// snapshot copies the status and fills in what changes while running. The
// caller holds j.mu.
func (j *Job) snapshot() Status {
	st := j.status
	st.ID = j.ID
	st.State = j.state
	if j.out != nil {
		st.OutputBytes, st.OutputCut = j.out.kept()
	}
	if st.Cmd == "" {
		st.Cmd = j.cmdline()
	}
	switch {
	case st.Started == 0:
	case st.Stopped == 0:
		st.Elapsed = time.Since(time.Unix(0, st.Started)).Seconds()
		st.StopRequested = j.stopRequested
	default:
		st.Elapsed = time.Duration(st.Stopped - st.Started).Seconds()
	}
	return st
}

// Output returns a reader of the job's combined stdout and stderr from the
// first byte. With follow, the reader waits for more output until the job
// ends, then returns io.EOF: io.EOF comes only after the job's final Status
// is known and every byte it wrote has been read, so reading a follower to
// its end in the goroutine that then exits loses nothing. Without follow,
// the reader returns io.EOF at the end of what the job had written when
// Output was called. Reads return ctx.Err() once ctx is done. Each reader
// reads at its own pace and never slows the job. Close the reader when done
// with it.
func (j *Job) Output(ctx context.Context, follow bool) (io.ReadCloser, error) {
	j.mu.Lock()
	state, closed, out, started := j.state, j.closed, j.out, j.started
	j.mu.Unlock()
	switch {
	case closed:
		return nil, jobError(j.ID, ErrClosed)
	case state == StateNotStarted:
		return nil, jobError(j.ID, ErrNotStarted)
	}
	if out == nil { // Run is starting the job
		<-started
		j.mu.Lock()
		out = j.out
		j.mu.Unlock()
		if out == nil { // it failed to start, and says why
			return nil, j.Summary().Error
		}
	}
	return out.reader(ctx, follow)
}

// Close stops the job if it is running and removes its output. Readers
// already open keep reading what they have; new ones get ErrClosed. Close
// is idempotent.
func (j *Job) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	state := j.state
	j.mu.Unlock()
	if state != StateNotStarted {
		j.Stop()
		<-j.done
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	if j.out != nil && !j.KeepOutput {
		return j.out.remove()
	}
	return nil
}
