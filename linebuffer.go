//go:build linux

package tjob

import (
	"bytes"
	"sync"
)

// LineBuffer is an io.Writer that splits what is written to it into lines.
// It keeps everything in memory, so it suits small outputs and tests; a Job
// keeps its output in a spool file instead and uses a LineBuffer only to
// split that file when Lines is asked for. It is safe for concurrent use.
type LineBuffer struct {
	mu      sync.Mutex
	lines   []string
	partial bytes.Buffer // bytes after the last newline
}

// NewLineBuffer returns an empty LineBuffer, ready to be used as the Stdout
// or Stderr of an os/exec.Cmd.
func NewLineBuffer() *LineBuffer {
	return &LineBuffer{}
}

// Write splits p at newlines. It never fails.
func (l *LineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial.Write(p)
			return n, nil
		}
		if l.partial.Len() > 0 {
			l.partial.Write(p[:i])
			l.lines = append(l.lines, l.partial.String())
			l.partial.Reset()
		} else {
			l.lines = append(l.lines, string(p[:i]))
		}
		p = p[i+1:]
	}
}

// Lines returns the lines written so far, without their newlines. A last
// line that has no newline yet is included, so a prompt or a line still
// being written is not hidden.
func (l *LineBuffer) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.lines), len(l.lines)+1)
	copy(out, l.lines)
	if l.partial.Len() > 0 {
		out = append(out, l.partial.String())
	}
	return out
}
