// Package jobinit is the init of a job's jail: the first process in the
// job's namespaces. It sets the jail up from the inside (mounts, hostname,
// loopback), gives up every privilege the job must not have, starts the
// command, passes signals on, reaps orphans, and reports how the command
// ended. Without a jail it only execs the command, once the process that
// starts it has put it in the job's cgroup.
//
// The library starts it in one of two ways: the running program re-executed
// (the tjob package's init function recognises the marker and calls Main),
// or a small program of its own, cmd/tjob-init, which imports only this
// package. Both speak the protocol in this file: a Config as one JSON value
// on ConfigFD, and Report lines back on ReportFD.
package jobinit

import (
	"errors"
	"io/fs"
	"syscall"
)

const (
	// Arg0 is the init's argv[0]; together with MarkerEnv it tells a
	// program that it was started as the init.
	Arg0 = "tjob-init"
	// MarkerEnv holds the stage: "0" for the spawner of a job in a user
	// namespace (see spawn_linux.go), "1" for the init as the library or
	// the spawner started it, "2" after the init re-executed itself to
	// shed its privileges (see harden_linux.go).
	MarkerEnv = "TJOB_INIT"
	// UserNSEnv tells the spawner the job's ID map, HOSTID:SIZE.
	UserNSEnv = "TJOB_INIT_USERNS"
	// ProtocolEnv carries Protocol, so that an init of another build
	// refuses the job, saying so, instead of misreading it.
	ProtocolEnv = "TJOB_INIT_PROTOCOL"
	// Protocol is this protocol's version.
	Protocol = "3"

	// ConfigFD carries the Config; the library then holds it open for the
	// job's life, so that EOF on it means the library's process is gone.
	ConfigFD = 3
	// ReportFD carries Report lines back, one JSON value a line.
	ReportFD = 4
	// ExeFD is the init's own binary, which the library starts it through.
	ExeFD = 5
	// TmpFD, where Config.Tmp says so, is a detached mount (open_tree(2))
	// of the directory the job sees as /tmp.
	TmpFD = 6
	// StateFD carries the Config into stage 2.
	StateFD = 7
)

// Config is the job, as the library tells it to the init.
type Config struct {
	Path string
	Args []string
	Dir  string
	Env  []string

	// Jail: set the namespaces up and be their init. Without, exec the
	// command at once (the library has put this process in the job's
	// cgroup).
	Jail      bool
	Hostname  string
	MaskPaths []string // covered by empty read-only mounts
	// ReadOnly makes the host's file system read-only but for Dir and a
	// private /tmp: the tree at TmpFD when Tmp, else an empty tmpfs.
	ReadOnly bool
	Tmp      bool
	// Credential runs the command as this user and group (in the job's
	// user namespace, when it has one); nil keeps the init's.
	Credential *Credential
	// Seccomp is the filter the command runs under: a classic BPF
	// program, sock_filter structs in the machine's byte order. Empty:
	// none.
	Seccomp []byte
}

// Credential is a user and group ID.
type Credential struct {
	UID, GID uint32
}

// Report is one line the init writes back.
type Report struct {
	// Init: the spawner started the init, as this host pid, a child of
	// the library's process.
	Init int `json:",omitempty"`
	// Ready: the jail is set up and the init holds no more privilege than
	// the job; it waits for a "g" on ConfigFD before it starts the
	// command, so that the library can set the job's CPU limit, which
	// would have slowed the setup.
	Ready  bool   `json:",omitempty"`
	Err    *Error `json:",omitempty"` // the command could not start
	Pid    int    `json:",omitempty"` // the command runs, as this pid in the jail
	Ended  bool   `json:",omitempty"` // the command ended, with Exit and Signal
	Exit   int64  `json:",omitempty"`
	Signal int    `json:",omitempty"`
}

// Error is a failure before the command ran, as it crosses the pipe: the
// operation, the path it was on and the errno, so that the library can
// rebuild an error that unwraps as one made in its own process would.
type Error struct {
	Op    string        `json:",omitempty"` // "chdir", "exec", "mount", ...
	Path  string        `json:",omitempty"`
	Errno syscall.Errno `json:",omitempty"`
	Msg   string        `json:",omitempty"` // the whole message, where there is no path
}

// NewError turns err into an Error: an *fs.PathError keeps its parts, any
// other error its message and, where it wraps one, its errno.
func NewError(err error) *Error {
	e := &Error{}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		e.Op, e.Path = pe.Op, pe.Path
		if !errors.As(pe.Err, &e.Errno) {
			e.Msg = pe.Err.Error()
		}
		return e
	}
	errors.As(err, &e.Errno)
	e.Msg = err.Error()
	return e
}

// Err rebuilds the error, so that errors.Is(err, fs.ErrNotExist) and the
// like hold for it as for the error the init had.
func (e *Error) Err() error {
	if e.Path != "" || e.Op != "" {
		var cause error = e.Errno
		if e.Errno == 0 {
			cause = errors.New(e.Msg)
		}
		return &fs.PathError{Op: e.Op, Path: e.Path, Err: cause}
	}
	if e.Errno != 0 {
		return &wrapped{msg: e.Msg, errno: e.Errno}
	}
	return errors.New(e.Msg)
}

// wrapped is a message that unwraps to the errno it was made from.
type wrapped struct {
	msg   string
	errno syscall.Errno
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.errno }
