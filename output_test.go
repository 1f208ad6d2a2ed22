package tjob

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// FuzzOutput drives the spool with arbitrary bytes written in arbitrary
// pieces, and checks that followers reading in arbitrary pieces get exactly
// those bytes. It needs no root: no job runs.
func FuzzOutput(f *testing.F) {
	f.Add([]byte("hello\nworld"), uint8(3), uint8(2))
	f.Add([]byte{0, 255, '\n', 0}, uint8(1), uint8(1))
	f.Add(bytes.Repeat([]byte("x"), 70000), uint8(200), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, writeSize, readSize uint8) {
		s, err := newSpool(t.TempDir(), "fuzz")
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
