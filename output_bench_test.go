//go:build linux

package tjob

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSpoolCopy takes BenchmarkCapture apart: dd writes 1 GiB into a
// pipe as large as a job's, and this process copies the pipe into a file,
// with no job, jail or cgroup around it. "spool" is the library's copier;
// "splice" moves the pipe's pages into the file with splice(2), without a
// copy through user space; "shell" is `sh -c 'dd | cat > FILE'`, the
// shell's way to capture output. It needs no root. Run with -benchtime=3x:
// each iteration moves 1 GiB.
func BenchmarkSpoolCopy(b *testing.B) {
	const size = 1 << 30
	dir := b.TempDir()
	b.Run("spool", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			s, err := newSpool(dir, strconv.Itoa(i), 0)
			if err != nil {
				b.Fatal(err)
			}
			pipe, dd := startDD(b, size)
			s.fill(pipe)
			s.finish()
			finishDD(b, pipe, dd)
			if n, _, _ := s.state(); n != size || s.error() != nil {
				b.Fatalf("the spool took %d bytes of %d: %v", n, size, s.error())
			}
			s.remove()
		}
	})
	b.Run("splice", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			out, err := os.Create(filepath.Join(dir, "splice"))
			if err != nil {
				b.Fatal(err)
			}
			pipe, dd := startDD(b, size)
			n, err := splice(out, pipe)
			finishDD(b, pipe, dd)
			out.Close()
			os.Remove(out.Name())
			if n != size || err != nil {
				b.Fatalf("spliced %d bytes of %d: %v", n, size, err)
			}
		}
	})
	b.Run("shell", func(b *testing.B) {
		b.SetBytes(size)
		out := filepath.Join(dir, "shell")
		for i := 0; i < b.N; i++ {
			cmd := exec.Command("sh", "-c", "dd if=/dev/zero bs=1M count="+strconv.Itoa(size>>20)+" status=none | cat > "+out)
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, msg)
			}
			os.Remove(out)
		}
	})
}

// startDD starts dd writing size bytes of zeros into a pipe as large as a
// job's output pipe, and returns the pipe's read end.
func startDD(b *testing.B, size int) (*os.File, *exec.Cmd) {
	pr, pw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	if rc, err := pr.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
	dd := exec.Command("dd", "if=/dev/zero", "bs=1M", "count="+strconv.Itoa(size>>20), "status=none")
	dd.Stdout = pw
	err = dd.Start()
	pw.Close() // dd has its copy
	if err != nil {
		pr.Close()
		b.Fatal(err)
	}
	return pr, dd
}

func finishDD(b *testing.B, pipe *os.File, dd *exec.Cmd) {
	pipe.Close()
	if err := dd.Wait(); err != nil {
		b.Fatal(err)
	}
}

// splice moves everything from pipe into out with splice(2), waiting for
// the pipe on the runtime's poller as the spool's copier does.
func splice(out, pipe *os.File) (int64, error) {
	rc, err := pipe.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		var n int64
		var serr error
		err := rc.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, int(out.Fd()), nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
			return serr != unix.EAGAIN
		})
		if err == nil {
			err = serr
		}
		if err != nil || n == 0 {
			return total, err
		}
		total += n
	}
}
