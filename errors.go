//go:build linux

package tjob

import (
	"errors"
	"fmt"
)

// Errors that callers test for with errors.Is. Every error the library makes
// says "tjob: " once, where it is made.
var (
	// ErrNotStarted: the job has not been Run.
	ErrNotStarted = errors.New("not started")
	// ErrAlreadyStarted: Run was called on a job that had been run before.
	ErrAlreadyStarted = errors.New("already started")
	// ErrClosed: the job was closed and its output removed.
	ErrClosed = errors.New("closed")
	// ErrInvalid: the job's configuration is wrong; the error is a
	// *ConfigError, which says which field and why. Nothing was started.
	ErrInvalid = errors.New("invalid job")
)

// ConfigError is a field of a Job that cannot be run as it is. It matches
// ErrInvalid with errors.Is.
type ConfigError struct {
	Field  string // the Job field: "MemoryMB", "Args[2]", "IODevices", ...
	Reason string // what is wrong with it: "is negative (-1)"
	Err    error  // the cause, where there is one (a file that is not there)
}

func (e *ConfigError) Error() string {
	return "tjob: invalid job: " + e.Field + " " + e.Reason
}

// Is reports ErrInvalid.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalid }

func (e *ConfigError) Unwrap() error { return e.Err }

// invalid makes the ConfigError for field.
func invalid(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// jobError is an error about job id: "tjob: job ID: ...".
func jobError(id string, err error) error {
	return fmt.Errorf("tjob: job %s: %w", id, err)
}
