package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const memoryIntro = "A fresh tjobs for each run; a job writes 2 GiB (`dd if=/dev/zero bs=1M count=2048`) while 10 clients follow it (`Logs(follow)`, each on its own connection, " +
	"reading as fast as they can). tjobs's VmHWM (peak RSS, reset with /proc/PID/clear_refs just before the job) and its VmRSS sampled every 20 ms. " +
	"Then 5 `sleep` jobs: the RSS of each jail's init (the `tjob-init` beside tjobs, started through a file descriptor, PID 1 of the job's namespaces), " +
	"next to the RSS of the `sleep` it runs. The library's own init, in a test binary, is measured by BenchmarkJailMemory (start_test.go)."

// memRun is one run of the memory benchmark, on a fresh tjobs.
type memRun struct {
	srv     *tjobsServer
	ctl     *client
	id      string        // the job
	idle    float64       // tjobs's RSS before the job, MiB
	peak    float64       // its VmHWM after the job, MiB
	sampled float64       // the most of its RSS sampled during the job, MiB
	heap    float64       // the largest Go heap gctrace reported, MB
	goal    float64       // the largest heap goal gctrace reported, MB
	gcs     int           // GCs during the run
	dur     time.Duration // the job and its followers
}

func (m *memRun) close() {
	m.ctl.conn.Close()
	m.srv.stop()
}

func sectionMemory(ctx context.Context, e *env, s *section) error {
	size := int64(e.runs(2048, 256)) << 20
	var runs []*memRun
	for r := 0; r < e.runs(2, 1) && ctx.Err() == nil; r++ {
		if len(runs) > 0 {
			last := runs[len(runs)-1]
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*last.dur+45*time.Second {
				s.note("Run %d skipped: the section's time budget would not cover it (a run took %.0f s).", r+1, last.dur.Seconds())
				break
			}
			last.close() // only the last run's server is kept, for the jails
		}
		m, err := memoryRun(ctx, e, fmt.Sprintf("memory-%d", r), size)
		if err != nil && len(runs) > 0 && ctx.Err() != nil {
			s.note("The time budget ran out during run %d: it is not counted.", r+1)
			break
		}
		if err != nil {
			return err
		}
		runs = append(runs, m)
	}
	if len(runs) == 0 {
		return errors.New("no run")
	}
	last := runs[len(runs)-1]
	defer last.ctl.conn.Close()
	peak := memoryRows(s, runs, size)
	if err := jailRSS(ctx, s, last.srv, last.ctl); err != nil {
		return err
	}
	if ctx.Err() == nil {
		logserverRows(ctx, e, s, last, size, peak)
	}
	return nil
}

// memoryRows adds the rows of tjobs's own memory, and returns its median peak.
func memoryRows(s *section, runs []*memRun, size int64) float64 {
	var peaks, sampled, idles []float64
	for _, m := range runs {
		peaks = append(peaks, m.peak)
		sampled = append(sampled, m.sampled)
		idles = append(idles, m.idle)
	}
	pk, idle := summarize(peaks), summarize(idles).med
	s.add(fromStats(&row{what: fmt.Sprintf("tjobs peak RSS (VmHWM), %d MiB job + 10 followers (a fresh tjobs each run)", size>>20), unit: "MiB",
		anchor: fmt.Sprintf("idle tjobs %.1f MiB", idle), ratio: ratioX(pk.med / idle), target: "< 64 MiB", met: yesNo(pk.max < 64)}, pk, "min–max"))
	s.add(fromStats(&row{what: "tjobs highest sampled VmRSS, same runs", unit: "MiB", anchor: fmt.Sprintf("idle tjobs %.1f MiB", idle),
		ratio: ratioX(summarize(sampled).med / idle)}, summarize(sampled), "min–max"))
	for i, m := range runs {
		s.note("Run %d: the job and its 10 followers were done in %.1f s (%.0f MiB/s delivered in all); Go heap (GODEBUG=gctrace=1, %d GCs) at most %.0f MB "+
			"(the larger of the heap at a GC's start and end), heap goal up to %.0f MB; the rest of the RSS is the runtime, goroutine stacks, and freed heap not yet returned to the kernel.",
			i+1, m.dur.Seconds(), 10*float64(size>>20)/m.dur.Seconds(), m.gcs, m.heap, m.goal)
	}
	return pk.med
}

// logserverRows: the minimal Logs server, as a process, sending the job's
// output to 10 readers in messages of three sizes, next to tjobs's peak.
func logserverRows(ctx context.Context, e *env, s *section, m *memRun, size int64, tjobsPeak float64) {
	spool := filepath.Join(m.srv.spool, m.id+".out")
	limit := min(size, 256<<20)
	tjobsMsg := observeMessageSize(ctx, m.ctl, m.id)
	var peaks []float64
	for _, n := range []int64{msg64KiB, msg32KiBLess, msg1MiBLess} {
		peak, err := e.logserverPeak(ctx, spool, limit, n, 10)
		if err != nil {
			s.note("Diagnostic with the minimal Logs server failed: %v", err)
			break
		}
		peaks = append(peaks, peak)
		s.add(single(&row{what: fmt.Sprintf("diagnostic: peak RSS of a minimal Logs server process (grpc-go, same proto and TLS config) sending %d MiB to 10 readers in messages of %s",
			limit>>20, msgSizeName(n, tjobsMsg)), unit: "MiB", anchor: "tjobs above", ratio: ratioX(peak / tjobsPeak)}, peak))
	}
	if len(peaks) >= 2 && peaks[1] < 0.6*peaks[0] {
		s.note("A message over 32 KiB takes a 1 MiB buffer from grpc-go's pool (a 64 KiB message marshals to 65,540 bytes), held while it is in flight, "+
			"and HTTP/2 flow control lets several be in flight per stream: the minimal server needs %.0f MiB with 64 KiB messages, %.0f MiB with 32 KiB − 16 B.", peaks[0], peaks[1])
	}
	if tjobsMsg > 0 {
		s.note("tjobs sent messages of up to %d bytes of output here (observed on a Logs stream of the job).", tjobsMsg)
	}
}

// jailRSS measures the jail's init of sleep jobs on srv.
func jailRSS(ctx context.Context, s *section, srv *tjobsServer, ctl *client) error {
	var ids []string
	defer func() {
		for _, id := range ids {
			ctl.stop(context.Background(), id)
		}
	}()
	for range 5 {
		id, err := ctl.run(ctx, "sleep", "60")
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	if err := wait(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	inits := jailInits(srv.pid)
	if len(inits) == 0 {
		return errors.New("no jail init found among tjobs's children")
	}
	var rss, pss, private, cmdRSS []float64
	for _, p := range inits {
		m, err := memoryOf(p)
		if err != nil {
			continue
		}
		rss, pss, private = append(rss, m.rss), append(pss, m.pss), append(private, m.private)
		for _, c := range children(p) {
			if m, err := memoryOf(c); err == nil {
				cmdRSS = append(cmdRSS, m.rss)
			}
		}
	}
	sleepRSS := summarize(cmdRSS).med
	s.add(fromStats(&row{what: "jail init VmRSS per job (`sleep` job)", unit: "KiB", anchor: fmt.Sprintf("the job's `sleep` %.0f KiB", sleepRSS),
		ratio: ratioX(summarize(rss).med / sleepRSS)}, summarize(rss), "min–max"))
	s.add(fromStats(&row{what: "jail init PSS per job (shared pages split among the 5)", unit: "KiB"}, summarize(pss), "min–max"))
	s.add(fromStats(&row{what: "jail init private memory per job (Private_Clean + Private_Dirty)", unit: "KiB"}, summarize(private), "min–max"))
	s.note("Cgroup check (tjobs): %s", describeCgroups(inits[0], srv.pid))
	return nil
}

// memoryRun runs a job of size bytes with 10 followers on a fresh tjobs,
// watching tjobs's memory.
func memoryRun(ctx context.Context, e *env, name string, size int64) (*memRun, error) {
	// gctrace makes the Go runtime log each GC's heap sizes to stderr:
	// the part of the RSS that is Go heap.
	srv, err := e.startServer(ctx, name, "GODEBUG=gctrace=1")
	if err != nil {
		return nil, err
	}
	ctl, err := e.dial(ctx, srv)
	if err != nil {
		return nil, err
	}
	m := &memRun{srv: srv, ctl: ctl}
	if err := m.measure(ctx, e, size); err != nil {
		ctl.conn.Close()
		return nil, err
	}
	return m, nil
}

func (m *memRun) measure(ctx context.Context, e *env, size int64) error {
	followers, err := e.dialMany(ctx, m.srv, 10)
	if err != nil {
		return err
	}
	defer closeAll(followers)
	if m.idle, err = rssMiB(m.srv.pid); err != nil {
		return err
	}
	if err := resetPeakRSS(m.srv.pid); err != nil {
		return fmt.Errorf("resetting VmHWM: %w", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if r, err := rssMiB(m.srv.pid); err == nil {
				m.sampled = math.Max(m.sampled, r)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	t0 := time.Now()
	res, id, err := followJob(ctx, m.ctl, followers, false, "dd", "if=/dev/zero", "bs=1M", "count="+strconv.FormatInt(size>>20, 10), "status=none")
	m.dur = time.Since(t0)
	m.id = id
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.err != nil || r.n != size {
			return fmt.Errorf("a follower got %d bytes of %d: %v", r.n, size, r.err)
		}
	}
	if m.peak, err = peakRSSMiB(m.srv.pid); err != nil {
		return err
	}
	m.heap, m.goal, m.gcs = gcPeak(m.srv.log)
	return nil
}

// gcPeak reads a Go program's gctrace lines ("gc N @T P%: ... A->B->C MB,
// D MB goal, ...") and returns the largest heap at a GC's start or end, the
// largest goal, and the number of GCs.
func gcPeak(logFile string) (heap, goal float64, n int) {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return 0, 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "gc ") {
			continue
		}
		f := strings.Fields(l)
		for i, w := range f {
			if strings.Count(w, "->") != 2 || i+1 >= len(f) || f[i+1] != "MB," {
				continue
			}
			parts := strings.Split(w, "->")
			start, err1 := strconv.ParseFloat(parts[0], 64)
			end, err2 := strconv.ParseFloat(parts[1], 64)
			if err1 == nil && err2 == nil {
				heap = math.Max(heap, math.Max(start, end))
				n++
			}
			if i+2 < len(f) {
				if v, err := strconv.ParseFloat(f[i+2], 64); err == nil {
					goal = math.Max(goal, v)
				}
			}
		}
	}
	return heap, goal, n
}
