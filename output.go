//go:build linux

package tjob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spool is a job's output: an append-only file that one copier fills from
// the job's pipe and any number of readers read at their own offsets. Memory
// does not grow with the output, and a slow reader costs the job nothing:
// readers never touch the pipe, only the file.
type spool struct {
	path string
	file *os.File // write end, owned by the copier
	max  int64    // the most bytes kept; 0: no limit

	mu   sync.Mutex
	size int64         // bytes written and visible to readers
	done bool          // the copier has finished: size is final
	err  error         // why the spool stopped taking output, if it did
	cut  bool          // output past max was dropped
	wake chan struct{} // closed and replaced whenever size grows or done is set
}

// spoolChunk is the most the copier moves before it tells readers. Large
// enough to make the copy cheap, small enough that followers see output
// promptly.
const spoolChunk = 1 << 20

// outputFile is where job id's output is kept in spool directory dir.
func outputFile(dir, id string) string { return filepath.Join(dir, id+outputSuffix) }

const outputSuffix = ".out"

func newSpool(dir, id string, max int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tjob: output spool: %w", err)
	}
	path := outputFile(dir, id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tjob: output spool: %w", err)
	}
	return &spool{path: path, file: f, max: max, wake: make(chan struct{})}, nil
}

// OpenOutput opens the output that a job with KeepOutput left in spoolDir,
// from its first byte, for a job that has ended and been closed.
func OpenOutput(spoolDir, id string) (*os.File, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	f, err := os.Open(outputFile(spoolDir, id))
	if err != nil {
		return nil, fmt.Errorf("tjob: output of job %s: %w", id, err)
	}
	return f, nil
}

// RemoveOutput removes the output that a job with KeepOutput left in
// spoolDir. Output that is not there is not an error.
func RemoveOutput(spoolDir, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := os.Remove(outputFile(spoolDir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tjob: output of job %s: %w", id, err)
	}
	return nil
}

// OutputIDs lists the jobs whose output is in spoolDir, by ID: what a
// server left there, to be kept or removed. Other files are not listed.
func OutputIDs(spoolDir string) ([]string, error) {
	ents, err := os.ReadDir(spoolDir)
	if err != nil {
		return nil, fmt.Errorf("tjob: output spool: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), outputSuffix); ok && e.Type().IsRegular() && checkID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// fill copies the job's output from pipe into the spool until the pipe's
// write ends are all closed, or the pipe is closed under it, then closes the
// spool's write end. When the spool
// cannot take more (the disk is full), fill records why and keeps draining
// the pipe, so the job is never blocked by its own output.
func (s *spool) fill(pipe *os.File) {
	rc, err := pipe.SyscallConn()
	if err != nil {
		s.setErr(fmt.Errorf("tjob: reading job output: %w", err))
		s.file.Close()
		return
	}
	for {
		buf, n, err := readChunk(rc)
		if n > 0 && s.error() == nil {
			n = s.keep(n)
		}
		if n > 0 && s.error() == nil {
			// What fits is kept and shown even when the rest does not.
			w, werr := pwriteAll(s.file, buf[:n], s.writeOffset())
			if w > 0 {
				s.grow(int64(w))
			}
			if werr != nil {
				s.setErr(fmt.Errorf("tjob: output spool: %w", werr))
			}
		}
		if buf != nil {
			chunkPool.Put(buf)
		}
		if err != nil {
			if err != io.EOF && !errors.Is(err, os.ErrClosed) {
				s.setErr(fmt.Errorf("tjob: reading job output: %w", err))
			}
			break
		}
	}
	s.file.Close()
}

// chunkPool holds the copy buffers. A buffer is taken only once the pipe has
// data, so an idle job holds none: a thousand quiet jobs cost no copy memory.
var chunkPool = sync.Pool{New: func() any { return make([]byte, spoolChunk) }}

// readChunk waits on the runtime's poller until the pipe has data, then
// reads it into a pooled buffer. It returns io.EOF once every writer has
// closed the pipe. (A plain read and write measured faster here than
// splice(2) from the pipe into the file.)
func readChunk(rc syscall.RawConn) ([]byte, int, error) {
	var buf []byte
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		buf = chunkPool.Get().([]byte)
		n, rerr = unix.Read(int(fd), buf)
		if rerr == unix.EAGAIN {
			chunkPool.Put(buf)
			buf = nil
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return buf, 0, err
	case rerr != nil:
		return buf, 0, rerr
	case n == 0:
		return buf, 0, io.EOF
	}
	return buf, n, nil
}

// pwriteAll writes b at off, and counts what a write that fails half way
// wrote before it failed: os.File.WriteAt does not, and so the part of a
// chunk that fit on a full disk was kept but not shown.
func pwriteAll(f *os.File, b []byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var werr error
	cerr := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := unix.Pwrite(int(fd), b[n:], off+int64(n))
			if m > 0 {
				n += m
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil || m == 0 {
				werr = err
				if err == nil {
					werr = io.ErrShortWrite
				}
				break
			}
		}
		return true
	})
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		return n, &fs.PathError{Op: "write", Path: f.Name(), Err: werr}
	}
	return n, nil
}

// keep is how many of n more bytes the spool keeps under its max; the rest
// is dropped, and the spool says it cut the output.
func (s *spool) keep(n int) int {
	if s.max == 0 {
		return n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := s.max - s.size; int64(n) > room {
		s.cut = true
		return int(max(room, 0))
	}
	return n
}

// kept is how many bytes the spool holds, and whether it cut the output.
func (s *spool) kept() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.cut
}

func (s *spool) writeOffset() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// grow makes n more bytes visible to readers and wakes them.
func (s *spool) grow(n int64) {
	s.mu.Lock()
	s.size += n
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *spool) setErr(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// finish tells readers that no more is coming. The job calls it once its
// final Status is known, so a follower that reaches the end finds the job
// ended.
func (s *spool) finish() {
	s.mu.Lock()
	s.done = true
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

// state is a consistent snapshot for a reader: how much it may read, whether
// more can come, and a channel that is closed when either changes.
func (s *spool) state() (size int64, done bool, wake <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.done, s.wake
}

func (s *spool) error() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// reader opens the spool for one reader. Each reader has a file of its own,
// so it keeps reading even after the job's owner removed the spool.
func (s *spool) reader(ctx context.Context, follow bool) (*outputReader, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("tjob: output spool: %w", err)
	}
	r := &outputReader{s: s, f: f, ctx: ctx, limit: -1}
	if !follow {
		r.limit, _, _ = s.state()
	}
	return r, nil
}

// outputReader reads a job's output from the first byte. A following reader
// waits for more output until the job ends, then returns io.EOF; otherwise it
// returns io.EOF at the end of what was written when it was opened.
type outputReader struct {
	s     *spool
	f     *os.File
	ctx   context.Context
	off   int64
	limit int64 // -1 while following
}

func (r *outputReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		size, done, wake := r.s.state()
		if r.limit >= 0 {
			size, done = r.limit, true
		}
		if r.off < size {
			if avail := size - r.off; int64(len(p)) > avail {
				p = p[:avail]
			}
			n, err := r.f.ReadAt(p, r.off)
			r.off += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-wake:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// Close releases the reader's file. It does not affect the job.
func (r *outputReader) Close() error {
	return r.f.Close()
}

// readAll returns the whole spool as it is now.
func (s *spool) lines() ([]string, error) {
	r, err := s.reader(context.Background(), false)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	lb := NewLineBuffer()
	if _, err := io.Copy(lb, r); err != nil {
		return nil, fmt.Errorf("tjob: reading output spool: %w", err)
	}
	return lb.Lines(), nil
}

// remove deletes the spool file. Open readers keep their copy until they
// close it.
func (s *spool) remove() error {
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tjob: removing output spool: %w", err)
	}
	return nil
}
