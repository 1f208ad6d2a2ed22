package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

// TestReliabilityRetention: short jobs go through tjobs without end, and
// with -retain its memory and its state directory stay flat: what it keeps
// is the newest jobs, whatever the number it ran. The soak runs 20,000 jobs
// with -retain 1000; make test 1,200 with -retain 100 (150 and 15 in the emulated VM, which runs them 10x slower).
func TestReliabilityRetention(t *testing.T) {
	n, retain := 1200, 100
	switch {
	case soak():
		n, retain = 20000, 1000
	case scaledDown():
		n, retain = 150, 15
	}
	e := newEnvWith(t, "-retain", strconv.Itoa(retain))
	pid := e.srv.Process.Pid
	state := filepath.Join(e.dir, ".tjob", "state")
	c := e.client(t, "cli")
	arg := fmt.Sprintf("%0100d", 0) // 101 bytes of output a job

	type sample struct {
		jobs       int
		rssKiB     int
		files      int
		stateBytes int64
	}
	var (
		samples []sample
		mu      sync.Mutex
		next    atomic.Int64
		done    atomic.Int64
		wg      sync.WaitGroup
	)
	measure := func(jobs int) {
		files, bytes := dirUsage(state)
		mu.Lock()
		samples = append(samples, sample{jobs, procStatus(pid, "VmRSS"), files, bytes})
		mu.Unlock()
	}
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && !t.Failed(); i = next.Add(1) - 1 {
				resp, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "echo", Args: []string{arg}})
				if err != nil {
					t.Errorf("Run %d: %v", i, err)
					return
				}
				w, err := c.Wait(ctxT(t), &tjobv1.WaitRequest{JobId: resp.GetJobId()})
				if err != nil || w.GetStatus().GetExit() != 0 {
					t.Errorf("job %d: %v %v", i, w.GetStatus(), err)
					return
				}
				if d := done.Add(1); d%int64(n/10) == 0 {
					measure(int(d))
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if t.Failed() {
		return
	}
	resp, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil || len(resp.GetJobs()) != retain {
		t.Fatalf("Status(all) after %d jobs with -retain %d: %d jobs, %v", n, retain, len(resp.GetJobs()), err)
	}
	// Flat: from the first tenth (past the retention count but for the
	// smallest runs) to the end, what tjobs holds does not grow with what it
	// ran. The first tenth pays for the Go runtime's warm-up.
	first, last := samples[0], samples[len(samples)-1]
	if last.files > first.files+2*16 || last.stateBytes > 2*first.stateBytes+1<<20 {
		t.Errorf("the state directory grew with the jobs run: %d files, %d bytes after %d jobs; %d files, %d bytes after %d",
			first.files, first.stateBytes, first.jobs, last.files, last.stateBytes, last.jobs)
	}
	if last.rssKiB > first.rssKiB+first.rssKiB/2+8<<10 {
		t.Errorf("tjobs' RSS grew with the jobs run: %d KiB after %d jobs, %d KiB after %d", first.rssKiB, first.jobs, last.rssKiB, last.jobs)
	}
	peak := 0
	for _, s := range samples {
		peak = max(peak, s.rssKiB)
	}
	report(t, fmt.Sprintf("load: %d short jobs through tjobs with -retain %d", n, retain),
		"%.0f s (16 Run+Wait in flight); after %d jobs: RSS %d MiB, state directory %d files, %d KiB; after %d: RSS %d MiB (peak %d MiB), %d files, %d KiB; Status(all) lists the newest %d",
		took.Seconds(), first.jobs, first.rssKiB>>10, first.files, first.stateBytes>>10,
		last.jobs, last.rssKiB>>10, peak>>10, last.files, last.stateBytes>>10, retain)
}

// dirUsage is the number of files under dir and their size.
func dirUsage(dir string) (files int, bytes int64) {
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				files++
				bytes += fi.Size()
			}
		}
		return nil
	})
	return files, bytes
}

// TestReliabilitySecondServer: a second tjobs started by mistake in the
// same directory exits 1 at once with one line naming the state directory
// and the first one's pid, and the first one's jobs and output are intact.
func TestReliabilitySecondServer(t *testing.T) {
	e := newEnv(t)
	id := e.runJob(t, "sh", "-c", "seq 1 1000")
	want := e.waitJob(t, id)
	second := execTjobs(e.dir, "-addr", "127.0.0.1:0")
	var stderr strings.Builder
	second.Stderr = &stderr
	err := second.Run()
	line := strings.TrimSpace(stderr.String())
	state, _ := filepath.Abs(filepath.Join(e.dir, ".tjob", "state"))
	if second.ProcessState == nil || second.ProcessState.ExitCode() != 1 || strings.Count(line, "\n") != 0 ||
		!strings.Contains(line, state) || !strings.Contains(line, fmt.Sprintf("pid %d", e.srv.Process.Pid)) {
		t.Fatalf("a second tjobs in the same directory: %v, stderr %q; want exit 1 and one line naming %s and pid %d", err, line, state, e.srv.Process.Pid)
	}
	if got := e.ok(t, "logs", id); got != string(want) {
		t.Errorf("the first server's job after the second one tried: output %d bytes, want %d", len(got), len(want))
	}
	if got := e.ok(t, "ps", "-a", "-q"); !strings.Contains(got, id) {
		t.Errorf("ps -a -q after the second server tried: %q, want %s", got, id)
	}
	report(t, "bad input: a second tjobs in the same directory (real binaries)", "exit 1 at once: %q; the first's jobs and output intact", line)
}
