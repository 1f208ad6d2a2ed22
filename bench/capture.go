package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/neildo/tjob"
	"golang.org/x/sys/unix"
)

const captureIntro = "`dd if=/dev/zero bs=1M count=1024` (1 GiB) as a job: its stdout goes through the job's pipe into the spool file, " +
	"copied by the library in the harness process, from `Run` to the final Status. Anchor: the same `dd` with `of=FILE`, in the same directory " +
	"(same file system, page cache only). No limits on either (a 20% CPU limit would measure the limit). Mirrors `BenchmarkCapture` in output_test.go. " +
	"Runs alternate; throughput is 1 GiB / wall time."

const gib = 1 << 30

var ddArgs = []string{"if=/dev/zero", "bs=1M", "count=1024", "status=none"}

func sectionCapture(ctx context.Context, e *env, s *section) error {
	if !e.root {
		s.skipRow("job writing 1 GiB to stdout", "needs root")
		return nil
	}
	dir := filepath.Join(e.work, "capture")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	reps := 7
	if e.quick {
		reps = 2
	}
	fileRun := func() (float64, error) {
		out := filepath.Join(dir, "file")
		cmd := exec.Command("dd", append(ddArgs, "of="+out)...)
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		os.Remove(out)
		if err != nil {
			return 0, fmt.Errorf("dd: %w", err)
		}
		return gib / d.Seconds() / (1 << 20), nil
	}
	jobRun := func(jail bool) func() (float64, error) {
		return func() (float64, error) {
			j := tjob.NewJob("dd", ddArgs...)
			j.SpoolDir = dir
			j.NoJail = !jail
			t0 := time.Now()
			st := <-j.Run()
			d := time.Since(t0)
			fi, serr := os.Stat(filepath.Join(dir, j.ID+".out"))
			j.Close()
			if st.Error != nil || st.Exit != 0 {
				return 0, fmt.Errorf("job: exit %d: %v", st.Exit, st.Error)
			}
			if serr != nil || fi.Size() != gib {
				return 0, fmt.Errorf("job's spool: %v (size %d, want %d)", serr, sizeOf(fi), gib)
			}
			return gib / d.Seconds() / (1 << 20), nil
		}
	}
	type v struct {
		name string
		run  func() (float64, error)
		xs   []float64
	}
	vs := []*v{
		{name: "dd → file (anchor)", run: fileRun},
		{name: "job (jail): dd → stdout → spool", run: jobRun(true)},
		{name: "job (no jail): dd → stdout → spool", run: jobRun(false)},
		{name: "for reference: `sh -c 'dd | cat > FILE'`", run: shellRun(dir)},
		{name: "diagnostic: dd → 1 MiB pipe → read/write 1 MiB → file, in the harness (the library's copy, without the job)", run: pipeCopy(dir, false)},
		{name: "diagnostic: dd → 1 MiB pipe → splice(2) → file, in the harness", run: pipeCopy(dir, true)},
	}
	// One warm-up each, then alternate.
	for _, x := range vs {
		if _, err := x.run(); err != nil {
			return err
		}
	}
	for i := 0; i < reps && ctx.Err() == nil; i++ {
		for _, x := range vs {
			mbs, err := x.run()
			if err != nil {
				return err
			}
			x.xs = append(x.xs, mbs)
		}
	}
	anchor := summarize(vs[0].xs)
	s.add(fromStats(&row{what: vs[0].name, unit: "MiB/s"}, anchor, "min–max"))
	var jailRatio float64
	for i, x := range vs[1:] {
		st := summarize(x.xs)
		r := fromStats(&row{what: x.name, unit: "MiB/s", anchor: "dd → file", ratio: pct(st.med/anchor.med) + " of dd → file"}, st, "min–max")
		if i == 0 {
			r.target = "≥ 80% of dd → file"
			jailRatio = st.med / anchor.med
			r.met = yesNo(jailRatio >= 0.8)
		}
		s.add(r)
	}
	if jailRatio < 0.8 && !math.IsNaN(jailRatio) && ctx.Err() == nil {
		prof, err := e.profile(ctx, "capture", []string{"-p", strconv.Itoa(os.Getpid())}, func() error {
			_, err := jobRun(true)()
			return err
		})
		if err != nil {
			s.note("Profile failed: %v", err)
		} else {
			s.profiles = append(s.profiles, profileText{"Profile: one jailed 1 GiB capture (the harness and its children: `tjobbench` is the library's copier, `dd` the job)", prof})
		}
	}
	return nil
}

// shellRun is the shell's way to capture output to a file.
func shellRun(dir string) func() (float64, error) {
	return func() (float64, error) {
		out := filepath.Join(dir, "shell")
		cmd := exec.Command("sh", "-c", "dd "+strings.Join(ddArgs, " ")+" | cat > "+out)
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		fi, serr := os.Stat(out)
		os.Remove(out)
		if err != nil || serr != nil || fi.Size() != gib {
			return 0, fmt.Errorf("dd | cat: %v %v", err, serr)
		}
		return gib / d.Seconds() / (1 << 20), nil
	}
}

// pipeCopy runs dd into a 1 MiB pipe and copies the pipe into a file in the
// harness: with read and write through a 1 MiB buffer, as the library's
// copier does, or with splice(2), which moves the pipe's pages into the
// page cache without a copy through user space.
func pipeCopy(dir string, useSplice bool) func() (float64, error) {
	buf := make([]byte, 1<<20)
	return func() (float64, error) {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return 0, err
		}
		pr, pw := os.NewFile(uintptr(fds[0]), "pipe"), os.NewFile(uintptr(fds[1]), "pipe")
		defer pr.Close()
		unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, 1<<20)
		name := filepath.Join(dir, "pipecopy")
		out, err := os.Create(name)
		if err != nil {
			pw.Close()
			return 0, err
		}
		defer os.Remove(name)
		defer out.Close()
		ofd := int(out.Fd())
		cmd := exec.Command("dd", ddArgs...)
		cmd.Stdout = pw
		t0 := time.Now()
		err = cmd.Start()
		pw.Close()
		if err != nil {
			return 0, err
		}
		var total int64
		for {
			var n int
			var err error
			if useSplice {
				var m int64
				m, err = unix.Splice(fds[0], nil, ofd, nil, 1<<20, unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
				n = int(m)
			} else {
				n, err = unix.Read(fds[0], buf)
				if n > 0 {
					if _, werr := out.Write(buf[:n]); werr != nil {
						err = werr
					}
				}
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				cmd.Wait()
				return 0, err
			}
			if n == 0 {
				break
			}
			total += int64(n)
		}
		if err := cmd.Wait(); err != nil {
			return 0, err
		}
		d := time.Since(t0)
		if total != gib {
			return 0, fmt.Errorf("copied %d bytes", total)
		}
		return gib / d.Seconds() / (1 << 20), nil
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}
