package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

const scaleIntro = "A fresh tjobs with the RFD's limits. 1000 `sleep 600` jobs are started by 16 concurrent `Run` calls on one mTLS connection; " +
	"then `Status(all)` (1000 jobs in each answer) is timed 30 times, tjobs's RSS compared with before, and all jobs stopped by 64 concurrent `Stop` calls " +
	"(SIGTERM to each jail's init, which forwards it to `sleep`)."

func sectionScale(ctx context.Context, e *env, s *section) error {
	if !e.root {
		s.skipRow("1000 concurrent jobs", "needs root (tjobs runs jails)")
		return nil
	}
	jobs := 1000
	if e.quick {
		jobs = 100
	}
	srv, err := e.startServer(ctx, "scale")
	if err != nil {
		return err
	}
	c, err := e.dial(ctx, srv)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	rss0, err := rssMiB(srv.pid)
	if err != nil {
		return err
	}

	// Start them all.
	ids := make([]string, jobs)
	lat := make([]float64, jobs)
	var next, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	startCtx, cancelStart := context.WithTimeout(ctx, 60*time.Second)
	defer cancelStart()
	t0 := time.Now()
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= jobs || startCtx.Err() != nil {
					return
				}
				t := time.Now()
				id, err := c.run(startCtx, "sleep", "600")
				lat[i] = float64(time.Since(t)) / float64(time.Millisecond)
				ids[i] = id
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	wg.Wait()
	startAll := time.Since(t0)
	var started []string
	var startLat []float64
	for i, id := range ids {
		if id != "" {
			started = append(started, id)
			startLat = append(startLat, lat[i])
		}
	}
	// Stop whatever was started, whatever happens next.
	stopped := false
	defer func() {
		if !stopped {
			stopAll(context.Background(), c, started, 64)
		}
	}()
	if firstErr != nil {
		s.note("Jobs that did not start: %d; the first error: %v", failed.Load(), firstErr)
	}
	// Are they all running?
	running := 0
	if resp, err := c.job.Status(ctx, &tjobv1.StatusRequest{}); err == nil {
		running = len(resp.GetJobs())
	} else {
		return fmt.Errorf("Status: %w", err)
	}
	okStarts := jobs - int(failed.Load())
	s.add(single(&row{what: fmt.Sprintf("jobs running after %d Run calls", jobs), unit: "jobs", anchor: fmt.Sprintf("%d asked", jobs),
		ratio: pct(float64(running) / float64(jobs)), target: "all start", met: yesNo(running == jobs && okStarts == jobs)}, float64(running)))
	s.add(single(&row{what: fmt.Sprintf("time to start %d jobs (16 concurrent Run calls)", jobs), unit: "s",
		anchor: "per job", ratio: fmt.Sprintf("%.2f ms per job", startAll.Seconds()*1000/float64(max(okStarts, 1)))}, startAll.Seconds()))
	s.add(fromStats(&row{what: "Run RPC latency during the ramp (16 in flight)", unit: "ms"}, summarize(startLat), "p10–p90"))

	if len(started) == 0 {
		return fmt.Errorf("no job started: %v", firstErr)
	}
	// Status(all) against the status of one job.
	var all, one []float64
	oneID := started[len(started)/2]
	for i := 0; i < 33 && ctx.Err() == nil; i++ {
		t := time.Now()
		resp, err := c.job.Status(ctx, &tjobv1.StatusRequest{All: true})
		if err != nil {
			return fmt.Errorf("Status(all): %w", err)
		}
		d := time.Since(t)
		if len(resp.GetJobs()) < len(started) {
			return fmt.Errorf("Status(all) listed %d jobs, want %d", len(resp.GetJobs()), len(started))
		}
		t = time.Now()
		if _, err := c.status(ctx, oneID); err != nil {
			return err
		}
		d1 := time.Since(t)
		if i >= 3 {
			all = append(all, float64(d)/float64(time.Millisecond))
			one = append(one, float64(d1)/float64(time.Millisecond))
		}
	}
	o := summarize(one)
	s.add(fromStats(&row{what: fmt.Sprintf("Status(all) with %d jobs: p50", len(started)), unit: "ms",
		anchor: fmt.Sprintf("Status of one job %.3f ms", o.med), ratio: ratioX(summarize(all).med / o.med)}, summarize(all), "p10–p90"))

	// Memory: the server's, and the jails'.
	rss1, err := rssMiB(srv.pid)
	if err != nil {
		return err
	}
	perJob := (rss1 - rss0) * 1024 / float64(max(len(started), 1))
	inits := jailInitsOf(srv.pid)
	var pssSum, rssSum float64
	for _, p := range inits {
		if m, err := smapsKB(p, "Pss"); err == nil {
			pssSum += m["Pss"]
		}
		if m, err := statusKB(p, "VmRSS"); err == nil {
			rssSum += m["VmRSS"]
		}
	}
	jailPss := pssSum / float64(max(len(inits), 1))
	s.add(single(&row{what: "tjobs RSS per job", unit: "KiB", anchor: fmt.Sprintf("jail init PSS %.0f KiB per job", jailPss),
		ratio: ratioX(perJob / jailPss)}, perJob))
	s.note("tjobs RSS %.1f MiB before, %.1f MiB with %d jobs running. The %d jail inits: %.0f MiB RSS in all (%.0f KiB each), %.0f MiB PSS in all (%.0f KiB each, the binary's pages shared).",
		rss0, rss1, len(started), len(inits), rssSum/1024, rssSum/float64(max(len(inits), 1)), pssSum/1024, jailPss)

	// Stop one alone, then the rest at once.
	t := time.Now()
	if _, err := c.job.Stop(ctx, &tjobv1.StopRequest{JobId: started[0]}); err != nil {
		return fmt.Errorf("Stop: %w", err)
	}
	oneStop := time.Since(t)
	rest := started[1:]
	t = time.Now()
	bad, stopErr := stopAll(ctx, c, rest, 64)
	stopTime := time.Since(t)
	stopped = true
	if bad > 0 {
		s.note("%d Stop calls failed; the first: %v", bad, stopErr)
	}
	s.add(single(&row{what: fmt.Sprintf("time to stop %d jobs (64 concurrent Stop calls)", len(rest)), unit: "s",
		anchor: fmt.Sprintf("one Stop alone %.1f ms", float64(oneStop)/float64(time.Millisecond)),
		ratio:  fmt.Sprintf("%.2f ms per job", stopTime.Seconds()*1000/float64(max(len(rest), 1)))}, stopTime.Seconds()))
	if resp, err := c.job.Status(ctx, &tjobv1.StatusRequest{}); err == nil && len(resp.GetJobs()) > 0 {
		s.note("%d jobs still running after every Stop returned.", len(resp.GetJobs()))
	}
	return nil
}

// stopAll stops the jobs with n concurrent Stop calls.
func stopAll(ctx context.Context, c *client, ids []string, n int) (int, error) {
	var next, bad atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) {
					return
				}
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.job.Stop(sctx, &tjobv1.StopRequest{JobId: ids[i]})
				cancel()
				if err != nil {
					bad.Add(1)
					once.Do(func() { first = err })
				}
			}
		})
	}
	wg.Wait()
	return int(bad.Load()), first
}
