package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

const fanoutIntro = "A job on tjobs (`tjobbench gen`, run as the job: it waits 1 s so every follower is attached, then writes 100 MiB of known pseudo-random data) " +
	"is followed by N concurrent `Logs(follow)` streams, each on its own mTLS connection (made beforehand), read in the harness process; each follower's bytes " +
	"are counted and hashed (SHA-256) against the generator's. Server CPU is tjobs's utime+stime from /proc/PID/stat around the whole job; " +
	"per follower = (CPU with N followers − median CPU with none) / N. N = 0 runs the same job with no follower: the cost of running and capturing it."

type followResult struct {
	n    int64
	msgs int // LogsResponse messages
	sum  [32]byte
	err  error
}

// follow reads a job's output to its end, counting and, with hash, hashing it.
func follow(ctx context.Context, c *client, id string, hash bool) followResult {
	stream, err := c.job.Logs(ctx, &tjobv1.LogsRequest{JobId: id, Follow: true})
	if err != nil {
		return followResult{err: err}
	}
	h := sha256.New()
	var res followResult
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			return res
		}
		res.n += int64(len(m.GetData()))
		res.msgs++
		if hash {
			h.Write(m.GetData())
		}
	}
	copy(res.sum[:], h.Sum(nil))
	return res
}

// followJob runs a job on ctl and follows it with every client in fs.
// It returns the followers' results once they and the job have ended.
func followJob(ctx context.Context, ctl *client, fs []*client, hash bool, path string, args ...string) ([]followResult, string, error) {
	id, err := ctl.run(ctx, path, args...)
	if err != nil {
		return nil, id, err
	}
	fctx, cancel := context.WithTimeout(ctx, 150*time.Second)
	defer cancel()
	res := make([]followResult, len(fs))
	var wg sync.WaitGroup
	for i, c := range fs {
		wg.Go(func() { res[i] = follow(fctx, c, id, hash) })
	}
	wg.Wait()
	st, err := ctl.waitEnded(ctx, id, 60*time.Second)
	if err != nil {
		return res, id, err
	}
	return res, id, exitedOK(st)
}

func sectionFanout(ctx context.Context, e *env, s *section) error {
	if !e.root {
		s.skipRow("fan-out", "needs root (tjobs runs jails)")
		return nil
	}
	size := int64(100 << 20)
	counts := []int{0, 1, 10, 100}
	reps := map[int]int{0: 5, 1: 5, 10: 3, 100: 2}
	if e.quick {
		size = 20 << 20
		reps = map[int]int{0: 1, 1: 1, 10: 1, 100: 1}
	}
	want := genSum(size)
	srv, err := e.startServer(ctx, "fanout")
	if err != nil {
		return err
	}
	ctl, err := e.dial(ctx, srv)
	if err != nil {
		return err
	}
	defer ctl.conn.Close()
	pool, err := e.dialMany(ctx, srv, 100)
	if err != nil {
		return err
	}
	defer closeAll(pool)

	cpu := map[int][]float64{}
	wall := map[int][]float64{}
	msgSize := map[int][]float64{} // bytes per message, per follower
	total, exact := 0, 0
	var firstBad error
	args := []string{"gen", "-size", strconv.FormatInt(size, 10), "-delay", "1s"}
	for _, n := range counts {
		for r := 0; r < reps[n] && ctx.Err() == nil; r++ {
			c0, err := cpuSeconds(srv.pid)
			if err != nil {
				return err
			}
			t0 := time.Now()
			if dl, ok := ctx.Deadline(); ok && r > 0 && len(wall[n]) > 0 && time.Until(dl) < time.Duration(1.5*summarize(wall[n]).max*float64(time.Second))+20*time.Second {
				s.note("%d followers: run %d and later skipped, the section's time budget would not cover them.", n, r+1)
				break
			}
			res, _, err := followJob(ctx, ctl, pool[:n], true, e.self, args...)
			if err != nil && ctx.Err() != nil {
				s.note("The time budget ran out during a run with %d followers: that run is not counted.", n)
				break
			}
			if err != nil {
				return fmt.Errorf("%d followers: %w", n, err)
			}
			d := time.Since(t0) - time.Second // the generator's wait
			c1, _ := cpuSeconds(srv.pid)
			cpu[n] = append(cpu[n], c1-c0)
			wall[n] = append(wall[n], d.Seconds())
			for _, r := range res {
				if r.msgs > 0 {
					msgSize[n] = append(msgSize[n], float64(r.n)/float64(r.msgs))
				}
				total++
				if r.err == nil && r.n == size && r.sum == want {
					exact++
				} else if firstBad == nil {
					firstBad = fmt.Errorf("a follower got %d bytes (want %d), hash match %v, error %v", r.n, size, r.sum == want, r.err)
				}
			}
		}
	}
	base := summarize(cpu[0]).med
	per := map[int]stats{}
	for _, n := range counts[1:] {
		if len(cpu[n]) == 0 {
			continue
		}
		var xs []float64
		for _, c := range cpu[n] {
			xs = append(xs, (c-base)/float64(n)*1000)
		}
		per[n] = summarize(xs)
	}
	s.add(fromStats(&row{what: "server CPU for the job alone (no follower)", unit: "CPU ms"}, summarize(scale(cpu[0], 1000)), "min–max"))
	for _, n := range counts[1:] {
		st, ok := per[n]
		if !ok {
			s.skipRow(fmt.Sprintf("server CPU per follower, %d followers", n), "no run (time budget)")
			continue
		}
		r := fromStats(&row{what: fmt.Sprintf("server CPU per follower, %d followers (per %d MiB)", n, size>>20), unit: "CPU ms"}, st, "min–max")
		if n != 1 {
			r.anchor = "1 follower"
			one := per[1].med
			r.ratio = ratioX(st.med / one)
			if n == 100 {
				r.target = "flat: ≤ 1.5× of 1 follower"
				r.met = yesNo(st.med <= 1.5*one)
			}
		}
		s.add(r)
	}
	allExact := total > 0 && exact == total
	s.add(single(&row{what: "followers byte-exact (count and SHA-256)", unit: "", anchor: fmt.Sprintf("%d of %d", exact, total),
		ratio: pct(float64(exact) / float64(max(total, 1))), target: "all byte-exact", met: yesNo(allExact)}, float64(exact)))
	if firstBad != nil {
		s.note("Not byte-exact: %v", firstBad)
	}
	for _, n := range counts[1:] {
		if len(wall[n]) == 0 {
			continue
		}
		w := summarize(wall[n]).med
		s.note("%d followers: the job and all its followers done in %.2f s after the generator's 1 s wait: %.0f MiB/s delivered in all (followers, TLS decryption and hashing share the 2 CPUs with tjobs); a follower's messages carried %.1f KiB on average (median over followers).",
			n, w, float64(n)*float64(size>>20)/w, summarize(msgSize[n]).med/1024)
	}
	if p100, ok := per[100]; ok && p100.med > 1.5*per[1].med && ctx.Err() == nil {
		prof, err := e.profile(ctx, "fanout", []string{"-p", strconv.Itoa(srv.pid)}, func() error {
			_, _, err := followJob(ctx, ctl, pool[:100], false, e.self, args...)
			return err
		})
		if err == nil {
			s.profiles = append(s.profiles, profileText{"Profile: tjobs with 100 followers", prof})
		}
	}
	return nil
}

func scale(xs []float64, k float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * k
	}
	return out
}

const memoryIntro = "A fresh tjobs for each run; a job writes 2 GiB (`dd if=/dev/zero bs=1M count=2048`) while 10 clients follow it (`Logs(follow)`, each on its own connection, " +
	"reading as fast as they can). tjobs's VmHWM (peak RSS, reset with /proc/PID/clear_refs just before the job) and its VmRSS sampled every 20 ms. " +
	"Then 5 `sleep` jobs: the RSS of each jail's init (the tjobs binary re-executed as PID 1 of the job's namespaces), next to the RSS of the `sleep` it runs."

func sectionMemory(ctx context.Context, e *env, s *section) error {
	if !e.root {
		s.skipRow("memory", "needs root (tjobs runs jails)")
		return nil
	}
	size := int64(2 << 30)
	count := "2048"
	if e.quick {
		size, count = 256<<20, "256"
	}
	reps := 2
	if e.quick {
		reps = 1
	}
	var runs []memRun
	for r := 0; r < reps && ctx.Err() == nil; r++ {
		m, err := memoryRun(ctx, e, fmt.Sprintf("memory-%d", r), size, count)
		if err != nil && len(runs) > 0 && ctx.Err() != nil {
			s.note("The time budget ran out during run %d: it is not counted.", r+1)
			break
		}
		if err != nil {
			return err
		}
		runs = append(runs, m)
		if dl, ok := ctx.Deadline(); ok && r < reps-1 && time.Until(dl) < 2*m.dur+45*time.Second {
			s.note("Run %d skipped: the section's time budget would not cover it (a run took %.0f s).", r+2, m.dur.Seconds())
			break
		}
		if r < reps-1 {
			m.ctl.conn.Close()
			m.srv.stop()
		}
	}
	if len(runs) == 0 {
		return errors.New("no run")
	}
	last := runs[len(runs)-1]
	srv, ctl, id := last.srv, last.ctl, last.id
	defer ctl.conn.Close()
	var peaks, sampled, idles []float64
	for _, m := range runs {
		peaks = append(peaks, m.peak)
		sampled = append(sampled, m.sampled)
		idles = append(idles, m.idle)
	}
	pk, idle := summarize(peaks), summarize(idles).med
	peak := pk.med
	s.add(fromStats(&row{what: fmt.Sprintf("tjobs peak RSS (VmHWM), %d MiB job + 10 followers (a fresh tjobs each run)", size>>20), unit: "MiB",
		anchor: fmt.Sprintf("idle tjobs %.1f MiB", idle), ratio: ratioX(peak / idle), target: "< 64 MiB", met: yesNo(pk.max < 64)}, pk, "min–max"))
	s.add(fromStats(&row{what: "tjobs highest sampled VmRSS, same runs", unit: "MiB", anchor: fmt.Sprintf("idle tjobs %.1f MiB", idle),
		ratio: ratioX(summarize(sampled).med / idle)}, summarize(sampled), "min–max"))
	for i, m := range runs {
		s.note("Run %d: the job and its 10 followers were done in %.1f s (%.0f MiB/s delivered in all); Go heap (GODEBUG=gctrace=1, %d GCs) at most %.0f MB "+
			"(the larger of the heap at a GC's start and end), heap goal up to %.0f MB; the rest of the RSS is the runtime, goroutine stacks, and freed heap not yet returned to the kernel.",
			i+1, m.dur.Seconds(), 10*float64(size>>20)/m.dur.Seconds(), m.gcs, m.heap, m.goal)
	}
	if err := jailRSS(ctx, e, s, srv, ctl); err != nil {
		return err
	}
	if ctx.Err() == nil {
		// What-if: the minimal Logs server, as a process, with 10 readers,
		// for three message sizes.
		spool := filepath.Join(srv.spool, id+".out")
		limit := min(size, 256<<20)
		tjobsMsg := observeMessageSize(ctx, ctl, id)
		var diag []float64
		for _, n := range []int64{64 << 10, 32<<10 - 16, 1<<20 - 16} {
			hwm, err := e.logserverPeak(ctx, spool, limit, n, 10)
			if err != nil {
				s.note("Diagnostic with the minimal Logs server failed: %v", err)
				break
			}
			diag = append(diag, hwm)
			s.add(single(&row{what: fmt.Sprintf("diagnostic: peak RSS of a minimal Logs server process (grpc-go, same proto and TLS config) sending %d MiB to 10 readers in messages of %s",
				limit>>20, msgSizeName(n, tjobsMsg)), unit: "MiB", anchor: "tjobs above", ratio: ratioX(hwm / peak)}, hwm))
		}
		if len(diag) >= 2 && diag[1] < 0.6*diag[0] {
			s.note("A message over 32 KiB takes a 1 MiB buffer from grpc-go's pool (a 64 KiB message marshals to 65,540 bytes), held while it is in flight, "+
				"and HTTP/2 flow control lets several be in flight per stream: the minimal server needs %.0f MiB with 64 KiB messages, %.0f MiB with 32 KiB − 16 B.", diag[0], diag[1])
		}
		if tjobsMsg > 0 {
			s.note("tjobs sent messages of up to %d bytes of output here (observed on a Logs stream of the job).", tjobsMsg)
		}
	}
	return nil
}

// jailRSS measures the jail's init of sleep jobs on srv.
func jailRSS(ctx context.Context, e *env, s *section, srv *tjobsServer, ctl *client) error {
	var ids []string
	for range 5 {
		id, err := ctl.run(ctx, "sleep", "60")
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	defer func() {
		for _, id := range ids {
			sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			ctl.job.Stop(sctx, &tjobv1.StopRequest{JobId: id})
			cancel()
		}
	}()
	if err := wait(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	inits := jailInitsOf(srv.pid)
	if len(inits) == 0 {
		return errors.New("no jail init found among tjobs's children")
	}
	var rss, pss, priv, cmdRSS []float64
	for _, p := range inits {
		m, err := statusKB(p, "VmRSS")
		if err != nil {
			continue
		}
		rss = append(rss, m["VmRSS"])
		if sm, err := smapsKB(p, "Pss", "Private_Clean", "Private_Dirty"); err == nil {
			pss = append(pss, sm["Pss"])
			priv = append(priv, sm["Private_Clean"]+sm["Private_Dirty"])
		}
		for _, c := range children(p) {
			if m, err := statusKB(c, "VmRSS"); err == nil {
				cmdRSS = append(cmdRSS, m["VmRSS"])
			}
		}
	}
	sleepRSS := summarize(cmdRSS).med
	s.add(fromStats(&row{what: "jail init VmRSS per job (`sleep` job)", unit: "KiB", anchor: fmt.Sprintf("the job's `sleep` %.0f KiB", sleepRSS),
		ratio: ratioX(summarize(rss).med / sleepRSS)}, summarize(rss), "min–max"))
	s.add(fromStats(&row{what: "jail init PSS per job (shared pages split among the 5)", unit: "KiB"}, summarize(pss), "min–max"))
	s.add(fromStats(&row{what: "jail init private memory per job (Private_Clean + Private_Dirty)", unit: "KiB"}, summarize(priv), "min–max"))
	s.note("Cgroup check (tjobs): %s", e.describeCgroups(cgroupOf(inits[0]), cgroupOf(srv.pid)))
	return nil
}

// gcPeak reads a Go program's gctrace lines ("gc N @T P%: ... A->B->C MB,
// D MB goal, ...") and returns the largest heap at a GC's start and the
// largest goal.
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
			if strings.Count(w, "->") == 2 && i+1 < len(f) && f[i+1] == "MB," {
				parts := strings.Split(w, "->")
				a, err1 := strconv.ParseFloat(parts[0], 64)
				b, err2 := strconv.ParseFloat(parts[1], 64)
				if err1 == nil && err2 == nil {
					heap = math.Max(heap, math.Max(a, b))
					n++
				}
				if i+2 < len(f) {
					if v, err := strconv.ParseFloat(f[i+2], 64); err == nil {
						goal = math.Max(goal, v)
					}
				}
			}
		}
	}
	return heap, goal, n
}

// memRun is one run of the memory benchmark, on a fresh tjobs.
type memRun struct {
	srv                 *tjobsServer
	ctl                 *client
	id                  string // the job
	idle, peak, sampled float64
	heap, goal          float64
	gcs                 int
	dur                 time.Duration
}

func memoryRun(ctx context.Context, e *env, name string, size int64, count string) (memRun, error) {
	var m memRun
	// gctrace makes the Go runtime log each GC's heap sizes to stderr:
	// the part of the RSS that is Go heap.
	srv, err := e.startServer(ctx, name, "GODEBUG=gctrace=1")
	if err != nil {
		return m, err
	}
	m.srv = srv
	ctl, err := e.dial(ctx, srv)
	if err != nil {
		return m, err
	}
	m.ctl = ctl
	fs, err := e.dialMany(ctx, srv, 10)
	if err != nil {
		ctl.conn.Close()
		return m, err
	}
	defer closeAll(fs)
	if m.idle, err = rssMiB(srv.pid); err != nil {
		ctl.conn.Close()
		return m, err
	}
	if err := resetPeakRSS(srv.pid); err != nil {
		ctl.conn.Close()
		return m, fmt.Errorf("resetting VmHWM: %w", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if r, err := rssMiB(srv.pid); err == nil {
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
	res, id, err := followJob(ctx, ctl, fs, false, "dd", "if=/dev/zero", "bs=1M", "count="+count, "status=none")
	m.dur = time.Since(t0)
	m.id = id
	close(stop)
	wg.Wait()
	if err == nil {
		for _, r := range res {
			if r.err != nil || r.n != size {
				err = fmt.Errorf("a follower got %d bytes of %d: %v", r.n, size, r.err)
				break
			}
		}
	}
	if err != nil {
		ctl.conn.Close()
		return m, err
	}
	hwm, err := statusKB(srv.pid, "VmHWM")
	if err != nil {
		ctl.conn.Close()
		return m, err
	}
	m.peak = hwm["VmHWM"] / 1024
	m.heap, m.goal, m.gcs = gcPeak(srv.log)
	return m, nil
}
