// Package server is tjobs: the tjob.v1.Job gRPC service. It turns RPCs into
// calls on the tjob library and keeps which user ran which job, the jobs'
// records, outputs and workspaces in its state directory, and the quotas
// and retention that keep a shared host usable; the library does the rest
// (limits, jail, output, stopping).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Defaults of a job's limits, from the design (20% of a CPU, 20 MiB, 20
// MiB/s of reads and of writes), and of the caps on what a request
// may ask for.
const (
	DefaultCPUPercent = 20
	DefaultMemoryMB   = 20
	DefaultReadBPS    = 20 << 20
	DefaultWriteBPS   = 20 << 20
	DefaultPidsMax    = 1024

	DefaultMaxCPUPercent = 100 // one CPU
	DefaultMaxMemoryMB   = 2048
	DefaultMaxReadBPS    = 200 << 20
	DefaultMaxWriteBPS   = 200 << 20
	DefaultMaxPids       = 4096
)

// Defaults of the quotas and of retention, for tjobs's flags.
const (
	DefaultMaxRunning = 64       // running jobs per user
	DefaultMaxOutput  = 1 << 30  // output bytes kept per job
	DefaultMaxDisk    = 20 << 30 // output and workspaces on disk, in all
	DefaultRetain     = 1000     // ended jobs kept per user
	DefaultRetainFor  = 7 * 24 * time.Hour
)

// logChunk is the most output one LogsResponse carries. Logs sends output
// from buffers of its own (logcodec.go), one at a time, so the size costs
// no pooled buffer of gRPC's: large messages stream faster (256 KiB ones
// reached 72% of a plain TLS copy in make bench, 32 KiB ones 58%), and a
// stream whose client stops reading holds about one.
const logChunk = 256 << 10

// DefaultMaxLogStreams is how many Logs streams one user may have open at
// once, unless Config says otherwise. A stream whose client does not read
// holds a file and some 300 KiB on the server (one logChunk, and gRPC's
// buffers).
const DefaultMaxLogStreams = 1024

// Bounds on what comes back to a client.
const (
	// maxStatusCmd is the most of a command line a Status's cmd carries.
	maxStatusCmd = 1024
	// maxIDShown is the most of a client's job ID that errors and log lines
	// repeat.
	maxIDShown = 64
)

// Config is how the server runs jobs. Zero means "none" for a cap, a quota
// or retention (tjobs's flags have the documented defaults).
type Config struct {
	// StateDir holds the jobs' records, outputs and workspaces. It belongs
	// to one server at a time: New locks it, and refuses one that another
	// server holds.
	StateDir string
	// MaskPaths are hidden from every job (the certificate directory).
	MaskPaths []string
	// Defaults of every job's limits; zero means none.
	CPUPercent, MemoryMB, ReadBPS, WriteBPS, PidsMax int
	// Caps: the most a request may ask for; zero means no cap.
	Caps Caps
	// IODevices are the block devices ReadBPS and WriteBPS limit; empty
	// means the library's choice (the disks behind /, and the workspace).
	IODevices []string
	// GracePeriod is how long Stop waits after SIGTERM before SIGKILL,
	// unless a request says otherwise; zero means the library's default.
	GracePeriod time.Duration
	// Log receives one line per RPC and the server's own news; nil means
	// standard error.
	Log io.Writer
	// MaxLogStreams is how many Logs streams one user may have open at
	// once; zero means DefaultMaxLogStreams.
	MaxLogStreams int
	// UserNS is the range of host IDs from which each running job gets a
	// user namespace of its own (see userns.go); Size 0 runs jobs without.
	UserNS tjob.IDMap
	// MaxRunning is the most jobs one user may have running.
	MaxRunning int
	// MaxOutput is the most output bytes kept of one job.
	MaxOutput int64
	// MaxDisk is the most bytes of output and workspaces kept on disk, in
	// all; Run is refused when it is full.
	MaxDisk int64
	// Retain is the most ended jobs kept per user; RetainFor, the longest
	// an ended job is kept. The oldest go first.
	Retain    int
	RetainFor time.Duration
}

// Caps are the most a request may ask for of each limit; zero means no cap.
type Caps struct {
	CPUPercent, MemoryMB, ReadBPS, WriteBPS, PidsMax int
}

// Server serves tjob.v1.Job. Make it with New; end it with Shutdown.
type Server struct {
	tjobv1.UnimplementedJobServer

	cfg      Config
	state    *stateDir
	log      *log.Logger
	health   *health.Server
	idBlocks *idBlocks // nil without user namespaces

	// stopping is canceled when shutdown starts: it ends Logs streams,
	// Waits and the janitor.
	stopping context.Context
	stop     context.CancelFunc
	watchers sync.WaitGroup // a goroutine per running job, until its record holds its end
	starting sync.WaitGroup // Runs from their job's entry to its watcher
	janitor  chan struct{}  // closed when the janitor has stopped
	// startSlots queues Runs for their start, first come first
	// served: see startSlotsFor.
	startSlots chan struct{}

	mu      sync.Mutex // guards the fields below; never held across a wait, a send or a file
	jobs    map[string]*entry
	disk    int64          // the sum of the records' DiskBytes
	running map[string]int // running jobs by user
	closing bool
	streams map[string]int // open Logs streams by user
}

// entry is one job. Its record is replaced, never changed, so that a reader
// may use the one it took under Server.mu without holding the lock.
type entry struct {
	id        string // rec.ID, which never changes: read without the lock
	rec       *record
	job       *tjob.Job     // while the job runs; nil once rec holds its end
	refs      int           // Logs streams and Waits of it in progress
	waited    bool          // a Wait of it has returned its final status
	idleSince time.Time     // when its last client let go, or it ended
	removed   bool          // gone from the server, or going
	finalized chan struct{} // closed once rec holds the job's end
}

// New makes a Server: it locks the state directory, then takes over what it
// holds from a previous server (records, outputs, workspaces) and removes
// what a crashed one left behind.
func New(cfg Config) (*Server, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("server: no state directory")
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cfg.StateDir = abs
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	out := cfg.Log
	if out == nil {
		out = os.Stderr
	}
	state, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		state:   state,
		log:     log.New(out, "", 0),
		health:  health.NewServer(),
		jobs:    map[string]*entry{},
		running: map[string]int{},
		streams: map[string]int{},
		janitor: make(chan struct{}),

		startSlots: make(chan struct{}, startSlotsFor(runtime.NumCPU())),
	}
	if cfg.UserNS.Size > 0 {
		s.idBlocks = newIDBlocks(cfg.UserNS)
	}
	s.stopping, s.stop = context.WithCancel(context.Background())
	if err := s.recover(); err != nil {
		state.close()
		return nil, err
	}
	go s.janitorLoop()
	return s, nil
}

// checkConfig refuses limits and caps the library refuses for every job, so
// that a server configured with them fails at start, naming the limit,
// instead of answering every Run with an error the client cannot fix.
func checkConfig(cfg Config) error {
	check := func(what string, cpu, mem, rbps, wbps, pids int) error {
		j := tjob.NewJob("true")
		j.CPUPercent, j.MemoryMB, j.ReadBPS, j.WriteBPS, j.PidsMax = cpu, mem, rbps, wbps, pids
		j.IODevices = cfg.IODevices
		j.GracePeriod = cfg.GracePeriod
		var ce *tjob.ConfigError
		if err := j.Validate(); errors.As(err, &ce) {
			return fmt.Errorf("job %s: %s %s", what, ce.Field, ce.Reason)
		} else if err != nil {
			return fmt.Errorf("job %s: %s", what, message(err))
		}
		return nil
	}
	c := cfg.Caps
	if err := check("limits", cfg.CPUPercent, cfg.MemoryMB, cfg.ReadBPS, cfg.WriteBPS, cfg.PidsMax); err != nil {
		return err
	}
	if err := check("caps", c.CPUPercent, c.MemoryMB, c.ReadBPS, c.WriteBPS, c.PidsMax); err != nil {
		return err
	}
	for _, l := range []struct {
		name      string
		def, cap  int
		flag, max string
	}{
		{"CPUPercent", cfg.CPUPercent, c.CPUPercent, "-cpu-percent", "-max-cpu-percent"},
		{"MemoryMB", cfg.MemoryMB, c.MemoryMB, "-memory-mb", "-max-memory-mb"},
		{"ReadBPS", cfg.ReadBPS, c.ReadBPS, "-read-bps", "-max-read-bps"},
		{"WriteBPS", cfg.WriteBPS, c.WriteBPS, "-write-bps", "-max-write-bps"},
		{"PidsMax", cfg.PidsMax, c.PidsMax, "-pids-max", "-max-pids"},
	} {
		if l.cap > 0 && (l.def > l.cap || l.def == 0) {
			return fmt.Errorf("job limits: the default %s %d (%s) is not within its cap %d (%s)", l.name, l.def, l.flag, l.cap, l.max)
		}
	}
	if cfg.MaxRunning < 0 || cfg.MaxOutput < 0 || cfg.MaxDisk < 0 || cfg.Retain < 0 || cfg.RetainFor < 0 {
		return errors.New("quotas and retention may not be negative")
	}
	return checkIDRange(cfg.UserNS)
}

// logf writes one line of the server's own news.
func (s *Server) logf(format string, args ...any) {
	s.log.Printf("%s %s", time.Now().Format(timeFormat), fmt.Sprintf(format, args...))
}

// Register adds the Job service and the gRPC health service to g.
func (s *Server) Register(g *grpc.Server) {
	tjobv1.RegisterJobServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(tjobv1.Job_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

var errShuttingDown = status.Error(codes.Unavailable, "server is shutting down")

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown ends the service: it stops taking calls on g, ends Logs streams
// and Waits, stops every running job (SIGTERM, then SIGKILL after its grace
// period) and keeps its record, output and workspace for the next server.
// It returns when g has stopped and the state directory is released; calls
// still running after the jobs are gone get drain to end, then are cut off.
func (s *Server) Shutdown(g *grpc.Server, drain time.Duration) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	// A Run that got in before this has made its job's entry and is
	// starting it: a job stopped before its start would start afterwards,
	// with no one to stop it.
	s.starting.Wait()

	s.mu.Lock()
	var running []*tjob.Job
	for _, e := range s.jobs {
		if e.job != nil {
			running = append(running, e.job)
		}
	}
	total := len(s.jobs)
	s.mu.Unlock()

	s.health.Shutdown()
	s.stop()
	<-s.janitor
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()

	s.logf("shutdown: stopping %d running jobs; keeping %d jobs' records", len(running), total)
	s.stopAll(running)

	select {
	case <-stopped:
	case <-time.After(drain):
		s.logf("shutdown: cutting off calls still running after %v", drain)
		g.Stop()
		<-stopped
	}
	s.state.close()
	s.logf("shutdown: done")
}

// stopAll stops the running jobs at once and waits until every record holds
// its job's end. Thousands of jobs take a while to end (each init's exit
// and cgroups' removal cost the host CPU): it says how far it is, so that a
// slow shutdown is told from a stuck one.
func (s *Server) stopAll(running []*tjob.Job) {
	began := time.Now()
	var wg sync.WaitGroup
	var ended atomic.Int64
	for _, j := range running {
		wg.Go(func() {
			if err := j.Stop(); err != nil {
				s.logf("shutdown: job %s: %s", j.ID, message(err))
			}
			ended.Add(1)
		})
	}
	waitReporting(&wg, shutdownProgressEvery, func() {
		s.logf("shutdown: %d of %d jobs ended", ended.Load(), len(running))
	})
	endedIn := time.Since(began)
	waitReporting(&s.watchers, shutdownProgressEvery, func() {
		s.logf("shutdown: all %d jobs ended; saving their records", len(running))
	})
	if len(running) > 0 {
		s.logf("shutdown: %d jobs ended in %v, their records saved in %v more",
			len(running), endedIn.Round(time.Millisecond), (time.Since(began) - endedIn).Round(time.Millisecond))
	}
}

// shutdownProgressEvery is how often a shutdown says how many jobs have
// ended.
const shutdownProgressEvery = 10 * time.Second

// waitReporting waits for wg and calls report each time every passes
// before it is done.
func waitReporting(wg *sync.WaitGroup, every time.Duration, report func()) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			report()
		}
	}
}

// clipID is a client's job ID cut to maxIDShown bytes, with "…" when it was
// longer: what a log line repeats of it (quoted there as needed).
func clipID(id string) string {
	if len(id) <= maxIDShown {
		return id
	}
	return strings.ToValidUTF8(id[:maxIDShown], "") + "…"
}

// showID is a client's job ID as an error repeats it: clipped, and quoted
// when it has anything but letters, digits and dashes, so that the error
// stays one short line.
func showID(id string) string {
	body, cut := strings.CutSuffix(clipID(id), "…")
	for _, r := range body {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-') {
			body = strconv.Quote(body)
			break
		}
	}
	if cut {
		body += "…"
	}
	return body
}

// cutCmd cuts a command line to at most maxStatusCmd bytes, on a character
// boundary, ending in "…" when it was longer.
func cutCmd(cmd string) string {
	if len(cmd) <= maxStatusCmd {
		return cmd
	}
	const ell = "…"
	cut := maxStatusCmd - len(ell)
	for cut > 0 && !utf8.RuneStart(cmd[cut]) {
		cut--
	}
	return cmd[:cut] + ell
}

// message turns a library error into one line for a person: without the
// library's "tjob: " prefixes, errors joined with "; ".
func message(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, "tjob: ", "")
	}
	return strings.Join(lines, "; ")
}

// startSlotsFor is how many jobs start at once on a machine with cpus
// CPUs. A start is mostly CPU work (the fork, the namespaces, the cgroups,
// the init's runtime) that goes no faster for doing more of it at once:
// with no bound, each of 1,000 Runs at once waited for nearly all of them;
// in turns, the first return first (the e2e load test's median Run went
// from 36 s to 25 s). Two a CPU keep the CPUs busy while a start waits
// for its init.
func startSlotsFor(cpus int) int { return 2 * cpus }
