//go:build linux

package tjob

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Faults a job can cause itself: the library keeps working and loses nothing
// it could keep.

// A job that writes 100 MiB without a newline: byte-exact, and Lines gives
// it back as one line.
func TestFaultHugeLine(t *testing.T) {
	requireRoot(t)
	const size = 100 << 20
	j, st := runShell(t, "head -c 104857600 /dev/zero | tr '\\0' x")
	if st.Exit != 0 {
		t.Fatalf("status = %+v", st)
	}
	r, err := j.Output(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := io.Copy(xOnly{}, r)
	if err != nil || n != size {
		t.Fatalf("read %d bytes (%v), want %d x's", n, err, size)
	}
	if lines := j.Status().Lines; len(lines) != 1 || len(lines[0]) != size {
		t.Fatalf("Lines: %d lines", len(lines))
	}
}

// xOnly is a writer that fails on anything but 'x'.
type xOnly struct{}

func (xOnly) Write(p []byte) (int, error) {
	if len(bytes.Trim(p, "x")) != 0 {
		return 0, io.ErrShortWrite
	}
	return len(p), nil
}

// A job that closes its stdout and stderr and keeps running: followers wait
// for its end, not for the pipe's.
func TestFaultClosesStdout(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sh", "-c", "echo bye; exec >&- 2>&-; sleep 0.5; exit 4")
	ch := j.Run()
	got := readAll(t, j, true)
	st := final(t, ch)
	if string(got) != "bye\n" || st.Exit != 4 {
		t.Fatalf("output %q, status %+v", got, st)
	}
}

// When the spool's file system is full, the job runs on undisturbed, the
// output kept so far stays readable, and the Status says what was lost.
func TestFaultSpoolFull(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tjob-test-full", dir, "tmpfs", 0, "size=1m,huge=never"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	j := NewJob("sh", "-c", "head -c 4194304 /dev/zero; echo still running >&2; exit 5")
	j.SpoolDir = dir
	defer j.Close()
	st := final(t, j.Run())
	if st.Exit != 5 {
		t.Fatalf("the job was disturbed: %+v", st)
	}
	if st.Error == nil || !strings.Contains(st.Error.Error(), "no space left on device") {
		t.Fatalf("Error = %v, want the spool's file system to be named full", st.Error)
	}
	got := readAll(t, j, false)
	if len(got) == 0 || len(got) > 1<<20 || len(bytes.Trim(got, "\x00")) != 0 {
		t.Fatalf("kept %d bytes, want a prefix of zeros up to 1 MiB", len(got))
	}
	// All that is on disk is shown, also the part of the write that failed
	// half way (os.File.WriteAt does not count it).
	fi, err := os.Stat(filepath.Join(dir, j.ID+".out"))
	if err != nil || fi.Size() != st.OutputBytes || int64(len(got)) != st.OutputBytes {
		t.Fatalf("output file of %v bytes (%v), Status says %d, readers get %d", fi.Size(), err, st.OutputBytes, len(got))
	}
}

// A job run by a process that dies without stopping it (a server killed
// with SIGKILL) does not outlive it: the jail's init notices its parent is
// gone and takes the namespace down.
func TestFaultOwnerKilled(t *testing.T) {
	requireRoot(t)
	if os.Getenv("TJOB_TEST_OWNER") == "1" {
		// The child: start a job, say so, and wait to be killed.
		j := NewJob("sh", "-c", "setsid sleep 31339 & sleep 31339")
		j.SpoolDir = os.Getenv("TJOB_TEST_SPOOL")
		j.Run()
		os.Stdout.WriteString("running\n")
		time.Sleep(time.Hour)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaultOwnerKilled$")
	cmd.Env = append(os.Environ(), "TJOB_TEST_OWNER=1", "TJOB_TEST_SPOOL="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "running\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("owner did not start its job: %q %v", buf, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	assertNoProcess(t, "sleep", "31339")
}
