package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

const fanoutIntro = "A job on tjobs (`tjobbench gen`, run as the job: it waits 1 s so every follower is attached, then writes 100 MiB of known pseudo-random data) " +
	"is followed by N concurrent `Logs(follow)` streams, each on its own mTLS connection (made beforehand), read in the harness process; each follower's bytes " +
	"are counted and hashed (SHA-256) against the generator's. Server CPU is tjobs's CPU time around the whole job: the sum of its threads' run time in /proc/PID/task/*/schedstat (nanoseconds), " +
	"or utime+stime from /proc/PID/stat (10 ms clock ticks) when the two differ by more than two ticks, as when a thread ended; " +
	"per follower = (CPU with N followers − median CPU with none) / N; with one follower, each run is compared with the no-follower run made just before it (the runs alternate), " +
	"because one follower's cost is no bigger than how much the job alone varies over a section. N = 0 runs the same job with no follower: the cost of running and capturing it. " +
	"Since even so one follower's figure is within the job's own variation, the target is measured without the job: 1 and 100 followers read the whole output of the last job after it ended " +
	"(the same streams, without its capture beside them), alternately; per follower = tjobs's CPU over the reads / N."

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

// followAll follows a job's output with every client at once, and returns
// once they all have reached its end.
func followAll(ctx context.Context, clients []*client, id string, hash bool) []followResult {
	res := make([]followResult, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { res[i] = follow(ctx, c, id, hash) })
	}
	wg.Wait()
	return res
}

// followJob runs a job on ctl and follows it with every client of
// followers. It returns the followers' results once they and the job have
// ended.
func followJob(ctx context.Context, ctl *client, followers []*client, hash bool, path string, args ...string) ([]followResult, string, error) {
	id, err := ctl.run(ctx, path, args...)
	if err != nil {
		return nil, id, err
	}
	fctx, cancel := context.WithTimeout(ctx, 150*time.Second)
	defer cancel()
	res := followAll(fctx, followers, id, hash)
	st, err := ctl.waitEnded(ctx, id, 60*time.Second)
	if err != nil {
		return res, id, err
	}
	return res, id, exitedOK(st)
}

// fanoutFigures are what the runs measured, by number of followers.
type fanoutFigures struct {
	cpu     map[int][]float64 // tjobs's CPU seconds for the whole job
	wall    map[int][]float64 // seconds from the generator's first byte to the end
	msgSize map[int][]float64 // bytes per message, per follower
	total   int               // followers
	exact   int               // followers that got every byte, in order
	bad     error             // the first follower that did not
}

func sectionFanout(ctx context.Context, e *env, s *section) error {
	size := int64(100 << 20)
	counts := []int{0, 1, 10, 100}
	reps := map[int]int{0: 7, 1: 7, 10: 3, 100: 2}
	if e.quick {
		size = 20 << 20
		reps = map[int]int{0: 1, 1: 1, 10: 1, 100: 1}
	}
	srv, ctl, err := e.connect(ctx, "fanout")
	if err != nil {
		return err
	}
	defer ctl.conn.Close()
	pool, err := e.dialMany(ctx, srv, 100)
	if err != nil {
		return err
	}
	defer closeAll(pool)

	gen := []string{"gen", "-size", strconv.FormatInt(size, 10), "-delay", "1s"}
	figs := &fanoutFigures{cpu: map[int][]float64{}, wall: map[int][]float64{}, msgSize: map[int][]float64{}}
	want := genSum(size)
	skipped := map[int]bool{}
	lastID := "" // a job that ended with all its output, for the replays
	for _, n := range runOrder(counts, reps) {
		if skipped[n] || ctx.Err() != nil {
			continue
		}
		if dl, ok := ctx.Deadline(); ok && len(figs.wall[n]) > 0 &&
			time.Until(dl) < time.Duration(1.5*summarize(figs.wall[n]).max*float64(time.Second))+20*time.Second {
			s.note("%d followers: run %d and later skipped, the section's time budget would not cover them.", n, len(figs.wall[n])+1)
			skipped[n] = true
			continue
		}
		c0, err := readServerCPU(srv.pid)
		if err != nil {
			return err
		}
		t0 := time.Now()
		res, id, err := followJob(ctx, ctl, pool[:n], true, e.self, gen...)
		if err != nil && ctx.Err() != nil {
			s.note("The time budget ran out during a run with %d followers: that run is not counted.", n)
			break
		}
		if err != nil {
			return fmt.Errorf("%d followers: %w", n, err)
		}
		wall := time.Since(t0) - time.Second // the generator's wait
		c1, err := readServerCPU(srv.pid)
		if err != nil {
			return err
		}
		figs.add(n, cpuDelta(c0, c1), wall, res, size, want)
		lastID = id
	}
	per := fanoutRows(s, figs, counts, size)
	if lastID != "" {
		if err := replayRows(ctx, e, s, srv.pid, pool, lastID, size); err != nil {
			return err
		}
	}
	if p100, ok := per[100]; ok && p100.med > 1.5*per[1].med && ctx.Err() == nil {
		e.addProfile(ctx, s, "fanout", "Profile: tjobs with 100 followers", []string{"-p", strconv.Itoa(srv.pid)}, func() error {
			_, _, err := followJob(ctx, ctl, pool[:100], false, e.self, gen...)
			return err
		})
	}
	return nil
}

// runOrder is the order of the section's runs: those with no follower and
// with one alternate, so that each one-follower run has a no-follower run
// beside it to be compared with (the machine drifts over a section), then
// the others, each count's runs together.
func runOrder(counts []int, reps map[int]int) []int {
	var order []int
	for r := range max(reps[0], reps[1]) {
		for _, n := range []int{0, 1} {
			if r < reps[n] {
				order = append(order, n)
			}
		}
	}
	for _, n := range counts {
		if n > 1 {
			for range reps[n] {
				order = append(order, n)
			}
		}
	}
	return order
}

// add records one run with n followers.
func (f *fanoutFigures) add(n int, cpu float64, wall time.Duration, res []followResult, size int64, want [32]byte) {
	f.cpu[n] = append(f.cpu[n], cpu)
	f.wall[n] = append(f.wall[n], wall.Seconds())
	for _, r := range res {
		if r.msgs > 0 {
			f.msgSize[n] = append(f.msgSize[n], float64(r.n)/float64(r.msgs))
		}
		f.total++
		if r.err == nil && r.n == size && r.sum == want {
			f.exact++
		} else if f.bad == nil {
			f.bad = fmt.Errorf("a follower got %d bytes (want %d), hash match %v, error %v", r.n, size, r.sum == want, r.err)
		}
	}
}

// fanoutRows adds the section's rows and notes, and returns the server's
// CPU per follower (ms) by number of followers.
func fanoutRows(s *section, figs *fanoutFigures, counts []int, size int64) map[int]stats {
	base := summarize(figs.cpu[0]).med
	per := map[int]stats{}
	for _, n := range counts[1:] {
		if len(figs.cpu[n]) == 0 {
			continue
		}
		var xs []float64
		for i, c := range figs.cpu[n] {
			b := base
			if n == 1 && i < len(figs.cpu[0]) {
				b = figs.cpu[0][i] // the no-follower run just before
			}
			xs = append(xs, (c-b)/float64(n)*1000)
		}
		per[n] = summarize(xs)
	}
	s.add(fromStats(&row{what: "server CPU for the job alone (no follower)", unit: "CPU ms"}, summarize(scaled(figs.cpu[0], 1000)), "min–max"))
	for _, n := range counts[1:] {
		st, ok := per[n]
		if !ok {
			s.skipRow(fmt.Sprintf("server CPU per follower, %d followers", n), "no run (time budget)")
			continue
		}
		r := &row{what: fmt.Sprintf("server CPU per follower, %d followers (per %d MiB)", n, size>>20), unit: "CPU ms"}
		if n != 1 {
			r.anchor, r.ratio = "1 follower", ratioX(st.med/per[1].med)
		}
		s.add(fromStats(r, st, "min–max"))
	}
	s.add(single(&row{what: "followers byte-exact (count and SHA-256)", anchor: fmt.Sprintf("%d of %d", figs.exact, figs.total),
		ratio: pct(float64(figs.exact) / float64(max(figs.total, 1))), target: "all byte-exact", met: yesNo(figs.total > 0 && figs.exact == figs.total)},
		float64(figs.exact)))
	if figs.bad != nil {
		s.note("Not byte-exact: %v", figs.bad)
	}
	for _, n := range counts[1:] {
		if len(figs.wall[n]) == 0 {
			continue
		}
		w := summarize(figs.wall[n]).med
		s.note("%d followers: the job and all its followers done in %.2f s after the generator's 1 s wait: %.0f MiB/s delivered in all "+
			"(followers, TLS decryption and hashing share the CPUs with tjobs); a follower's messages carried %.1f KiB on average (median over followers).",
			n, w, float64(n)*float64(size>>20)/w, summarize(figs.msgSize[n]).med/1024)
	}
	return per
}

// replayRows measures what followers cost tjobs without a job running
// beside them: 1 and 100 followers read all of job id's output, which
// ended, the one-follower runs around the others; per follower = tjobs's
// CPU over the reads / followers.
func replayRows(ctx context.Context, e *env, s *section, pid int, pool []*client, id string, size int64) error {
	order := []int{1, 1, 1, 100, 1, 1, 1, 100, 1}
	if e.quick {
		order = []int{1, 100}
	}
	per := map[int][]float64{}
	for _, n := range order {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 30*time.Second {
			s.note("Followers of the ended job: runs skipped, the section's time budget would not cover them.")
			break
		}
		c0, err := readServerCPU(pid)
		if err != nil {
			return err
		}
		for _, r := range followAll(ctx, pool[:n], id, false) {
			if r.err != nil || r.n != size {
				return fmt.Errorf("%d followers of ended job %s: one got %d bytes (want %d): %v", n, id, r.n, size, r.err)
			}
		}
		c1, err := readServerCPU(pid)
		if err != nil {
			return err
		}
		per[n] = append(per[n], cpuDelta(c0, c1)/float64(n)*1000)
	}
	if len(per[1]) == 0 {
		return nil
	}
	one := summarize(per[1])
	s.add(fromStats(&row{what: fmt.Sprintf("server CPU per follower of the ended job, 1 follower (per %d MiB)", size>>20), unit: "CPU ms"}, one, "min–max"))
	if len(per[100]) == 0 {
		return nil
	}
	hundred := summarize(per[100])
	s.add(fromStats(&row{what: fmt.Sprintf("server CPU per follower of the ended job, 100 followers (per %d MiB)", size>>20), unit: "CPU ms",
		anchor: "1 follower", ratio: ratioX(hundred.med / one.med), target: "flat: ≤ 1.5× of 1 follower", met: yesNo(hundred.med <= 1.5*one.med)}, hundred, "min–max"))
	return nil
}

// scaled is xs, each times k.
func scaled(xs []float64, k float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * k
	}
	return out
}
