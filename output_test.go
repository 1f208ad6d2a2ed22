//go:build linux

package tjob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FuzzOutput drives the spool with arbitrary bytes written in arbitrary
// pieces, and checks that followers reading in arbitrary pieces get exactly
// those bytes. It needs no root: no job runs.
func FuzzOutput(f *testing.F) {
	f.Add([]byte("hello\nworld"), uint8(3), uint8(2))
	f.Add([]byte{0, 255, '\n', 0}, uint8(1), uint8(1))
	f.Add(bytes.Repeat([]byte("x"), 70000), uint8(200), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, writeSize, readSize uint8) {
		s, err := newSpool(t.TempDir(), "fuzz", 0)
		if err != nil {
			t.Fatal(err)
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		filled := make(chan struct{})
		go func() {
			s.fill(pr)
			s.finish()
			pr.Close()
			close(filled)
		}()
		var wg sync.WaitGroup
		for _, follow := range []bool{true, true, false} {
			r, err := s.reader(context.Background(), follow)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func(follow bool) {
				defer wg.Done()
				defer r.Close()
				var got []byte
				buf := make([]byte, int(readSize)+1)
				for {
					n, err := r.Read(buf)
					got = append(got, buf[:n]...)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
				// A reader that does not follow stops at what was there
				// when it opened: a prefix.
				if follow && !bytes.Equal(got, data) || !follow && !bytes.HasPrefix(data, got) {
					t.Errorf("follow=%v: read %d bytes, want %d", follow, len(got), len(data))
				}
			}(follow)
		}
		for rest := data; len(rest) > 0; {
			n := min(len(rest), int(writeSize)+1)
			if _, err := pw.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		pw.Close()
		<-filled
		wg.Wait()
		if err := s.error(); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkCapture compares a job writing 1 GiB to its stdout, which the
// spool takes, with the same write straight into a file. Run with
// -benchtime=3x: each iteration moves 1 GiB.
func BenchmarkCapture(b *testing.B) {
	requireRoot(b)
	const size = 1 << 30
	dd := []string{"dd", "if=/dev/zero", "bs=1M", "count=1024", "status=none"}
	dir := b.TempDir()
	b.Run("file", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			out := filepath.Join(dir, "file")
			cmd := exec.Command(dd[0], append(dd[1:], "of="+out)...)
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
			os.Remove(out)
		}
	})
	for _, mode := range []string{"nojail", "jail"} {
		b.Run("job/"+mode, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				j := NewJob(dd[0], dd[1:]...)
				j.SpoolDir = dir
				j.NoJail = mode == "nojail"
				st := <-j.Run()
				if st.Exit != 0 || st.Error != nil {
					b.Fatal(st)
				}
				j.Close()
			}
		})
	}
}

// MaxOutput keeps the first bytes and drops the rest without slowing the
// job; Status says where the output was cut.
func TestMaxOutput(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sh", "-c", "head -c 3000000 /dev/zero; echo done >&2")
	j.MaxOutput = 1 << 20
	st := final(t, j.Run())
	if st.Exit != 0 || !st.OutputCut || st.OutputBytes != 1<<20 {
		t.Fatalf("status %v: OutputBytes %d, OutputCut %v; want cut at %d", st, st.OutputBytes, st.OutputCut, 1<<20)
	}
	if got := readAll(t, j, false); len(got) != 1<<20 {
		t.Fatalf("read %d bytes, want %d", len(got), 1<<20)
	}
	_, st2 := runShell(t, "echo short")
	if st2.OutputCut || st2.OutputBytes != 6 {
		t.Fatalf("an uncut job: OutputBytes %d, OutputCut %v", st2.OutputBytes, st2.OutputCut)
	}
}

// With KeepOutput, Close leaves the output for OpenOutput; RemoveOutput
// removes it, and OutputIDs lists what is there.
func TestKeepOutput(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "echo", "kept")
	j.KeepOutput = true
	final(t, j.Run())
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if ids, err := OutputIDs(j.SpoolDir); err != nil || len(ids) != 1 || ids[0] != j.ID {
		t.Fatalf("OutputIDs = %v, %v; want [%s]", ids, err, j.ID)
	}
	r, err := OpenOutput(j.SpoolDir, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "kept\n" {
		t.Fatalf("OpenOutput read %q", b)
	}
	if err := RemoveOutput(j.SpoolDir, j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenOutput(j.SpoolDir, j.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenOutput after RemoveOutput: %v", err)
	}
	if _, err := OpenOutput(j.SpoolDir, "../x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("OpenOutput of a path: %v", err)
	}
}

// A follower read to its end in the goroutine that then exits loses
// nothing, however slowly it reads: io.EOF comes only after the job's final
// Status, with every byte. (The pattern of the README and examples/ping.)
func TestFollowToEOFLosesNothing(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "seq", "1", "200000")
	done := j.Run()
	r, err := j.Output(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if got.Len() < 64<<10 {
			time.Sleep(time.Millisecond) // slow at first, as a slow terminal is
		}
	}
	select {
	case <-j.Done():
	default:
		t.Fatal("the follower got io.EOF before the job's final Status")
	}
	st := <-done
	if lines := bytes.Count(got.Bytes(), []byte("\n")); lines != 200000 || int64(got.Len()) != st.OutputBytes {
		t.Fatalf("read %d lines, %d bytes; the job wrote %d bytes", lines, got.Len(), st.OutputBytes)
	}
}
