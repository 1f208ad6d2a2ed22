//go:build linux

package tjob

import (
	"fmt"
	"syscall"
	"time"
)

// State is where a job is in its life.
type State int

const (
	// StateNotStarted: Run has not been called.
	StateNotStarted State = iota
	// StateStarting: Run is starting the job.
	StateStarting
	// StateRunning: the job's process is running.
	StateRunning
	// StateExited: the job's process has ended; Exit, Signal, OOMKilled and
	// StopRequested say how.
	StateExited
	// StateFailed: the job could not start; Error says why.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateNotStarted:
		return "not started"
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateExited:
		return "exited"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a job's state at one moment.
type Status struct {
	ID    string
	State State

	// Pid is the job's process on the host: the jail's init when the job
	// is jailed, the command itself otherwise.
	Pid int

	// Cmd is the command line, arguments separated by spaces.
	Cmd string

	// Started and Stopped are Unix times in nanoseconds; zero when not
	// started, and Stopped zero while running.
	Started int64
	Stopped int64

	// Elapsed is the run time in seconds, up to now while running.
	Elapsed float64

	// Exit is the exit code once the job has exited, 128+Signal when it was
	// killed by a signal, as a shell reports it, and -1 when it failed to
	// start.
	Exit int64

	// Signal is the signal that killed the job, or 0.
	Signal syscall.Signal

	// StopRequested is true when Stop was called while the job ran.
	StopRequested bool

	// OOMKilled is true when the kernel killed a process of the job for
	// exceeding MemoryMB.
	OOMKilled bool

	// Error says why the job failed to start, or what went wrong around it
	// (its output could not be kept, its cgroup could not be removed). A job
	// that exits non-zero has no Error: that is its Exit.
	Error error

	// Usage is what the job used, as the kernel counted it; known once the
	// job has ended and where its cgroup offers it.
	Usage Usage

	// OutputBytes is how much output is kept; OutputCut says that the
	// job wrote more, past MaxOutput, which was dropped.
	OutputBytes int64
	OutputCut   bool

	// Lines is the combined stdout and stderr split into lines; filled by
	// Job.Status only.
	Lines []string
}

// Usage is the resources a job used, from its cgroup. Zero where the kernel
// does not count it.
type Usage struct {
	CPU        time.Duration // user and system CPU time
	MemoryPeak uint64        // bytes
	ReadBytes  uint64        // bytes read from block devices
	WriteBytes uint64        // bytes written to block devices
}

// Running reports whether the job's process may still be running.
func (s Status) Running() bool {
	return s.State == StateStarting || s.State == StateRunning
}

// String describes the state in the words of `docker ps` (and `tjob ps`),
// without the times it adds: "Up 3s", "Exited (0)", "Exited (143)
// (stopped)", "Exited (137) (out of memory)", "Failed to start: <error>".
func (s Status) String() string {
	switch s.State {
	case StateNotStarted:
		return "Created"
	case StateStarting, StateRunning:
		return fmt.Sprintf("Up %s", time.Duration(s.Elapsed*float64(time.Second)).Round(time.Second))
	case StateFailed:
		return fmt.Sprintf("Failed to start: %v", s.Error)
	}
	str := fmt.Sprintf("Exited (%d)", s.Exit)
	if s.OOMKilled {
		str += " (out of memory)"
	} else if s.StopRequested {
		str += " (stopped)"
	}
	return str
}
