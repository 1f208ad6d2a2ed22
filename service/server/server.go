// Package server is tjobs: the tjob.v1.Job gRPC service. It turns RPCs into
// calls on the tjob library and keeps which user ran which job; the library
// does the rest (limits, jail, output, stopping).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults from RFD 1.
const (
	DefaultCPUPercent = 20
	DefaultMemoryMB   = 20
	DefaultReadBPS    = 20 << 20
	DefaultWriteBPS   = 20 << 20
	DefaultPidsMax    = 1024
)

// logChunk is the most output one LogsResponse carries. With the message's
// own few bytes it fits grpc-go's 32 KiB pooled buffer; one byte more and a
// message takes the next size up, 1 MiB, which a stream whose client does
// not read holds for as long as it is open.
const logChunk = 32<<10 - 16

// DefaultMaxLogStreams is how many Logs streams one user may have open at
// once, unless Config says otherwise. A stream whose client does not read
// holds a file and some 100 KiB on the server.
const DefaultMaxLogStreams = 1024

// Bounds on what a client sends and what comes back to it.
const (
	// maxCmdBytes is the longest command line Run takes: the path and the
	// arguments, each counted with its terminating NUL as the kernel counts
	// them. It is the kernel's limit for a single argument (MAX_ARG_STRLEN).
	maxCmdBytes = 128 << 10
	// maxStatusCmd is the most of a command line a Status carries, so that
	// the Status of many jobs stays within what a client receives.
	maxStatusCmd = 1024
	// maxIDShown is the most of a client's job ID that errors and log lines
	// repeat.
	maxIDShown = 64
)

// jobEnv is the environment of every job: the server's own is not the job's
// business.
var jobEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
}

// Config is how the server runs jobs.
type Config struct {
	// SpoolDir holds the jobs' output files. It belongs to the server: at
	// start, output files a crashed predecessor left in it are removed.
	SpoolDir string
	// MaskPaths are hidden from every job (the certificate directory); the
	// spool directory always is.
	MaskPaths []string
	// Limits of every job; zero means none.
	CPUPercent, MemoryMB, ReadBPS, WriteBPS, PidsMax int
	// IODevices are the block devices ReadBPS and WriteBPS limit; empty
	// means the library's choice (the disk behind /, the jobs' directory).
	IODevices []string
	// GracePeriod is how long Stop waits after SIGTERM before SIGKILL;
	// zero means the library's default.
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
}

// Server serves tjob.v1.Job. Make it with New.
type Server struct {
	tjobv1.UnimplementedJobServer

	cfg    Config
	log    *log.Logger
	health *health.Server

	// stopping is canceled when shutdown starts: it ends Logs streams.
	stopping context.Context
	stop     context.CancelFunc

	idBlocks *idBlocks // nil without user namespaces

	mu      sync.Mutex // guards the fields below; never held across a wait or a send
	jobs    map[string]*entry
	closing bool
	streams map[string]int // open Logs streams by user
}

// entry is one job and the user who ran it.
type entry struct {
	owner string
	job   *tjob.Job
}

// New makes a Server and readies its spool directory, removing what a
// crashed predecessor left there.
func New(cfg Config) (*Server, error) {
	if cfg.SpoolDir == "" {
		return nil, errors.New("server: no spool directory")
	}
	abs, err := filepath.Abs(cfg.SpoolDir)
	if err != nil {
		return nil, err
	}
	cfg.SpoolDir = abs
	out := cfg.Log
	if out == nil {
		out = os.Stderr
	}
	s := &Server{
		cfg:     cfg,
		log:     log.New(out, "", 0),
		health:  health.NewServer(),
		jobs:    map[string]*entry{},
		streams: map[string]int{},
	}
	s.stopping, s.stop = context.WithCancel(context.Background())
	if err := checkLimits(cfg); err != nil {
		return nil, err
	}
	if err := checkIDRange(cfg.UserNS); err != nil {
		return nil, err
	}
	if cfg.UserNS.Size > 0 {
		s.idBlocks = newIDBlocks(cfg.UserNS)
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	s.cleanup()
	return s, nil
}

// checkLimits refuses limits the library refuses for every job, so that a
// server configured with them fails at start, naming the limit, instead of
// answering every Run with an error the client cannot fix. The library
// checks a job's configuration before it looks for the command; a command
// that does not exist ends the check there, before anything is made.
func checkLimits(cfg Config) error {
	j := tjob.NewJob("tjobs-limits-check-" + uuid.NewString())
	j.CPUPercent = cfg.CPUPercent
	j.MemoryMB = cfg.MemoryMB
	j.ReadBPS = cfg.ReadBPS
	j.WriteBPS = cfg.WriteBPS
	j.PidsMax = cfg.PidsMax
	j.IODevices = cfg.IODevices
	j.GracePeriod = cfg.GracePeriod
	j.SpoolDir = cfg.SpoolDir
	st := <-j.Run()
	j.Close()
	if errors.Is(st.Error, tjob.ErrInvalid) {
		return fmt.Errorf("job limits: %s", strings.TrimPrefix(message(st.Error), tjob.ErrInvalid.Error()+": "))
	}
	return nil
}

// spoolFile is the name the library gives a job's output: <job ID>.out. Only
// such files are removed from the spool directory, whatever else is there.
var spoolFile = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.out$`)

// cleanup removes what a crashed predecessor left: output files in the spool
// directory, and the library's stale cgroups.
func (s *Server) cleanup() {
	ents, err := os.ReadDir(s.cfg.SpoolDir)
	if err != nil {
		s.logf("cleanup: %v", err)
	}
	var removed []string
	for _, e := range ents {
		if !e.Type().IsRegular() || !spoolFile.MatchString(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(s.cfg.SpoolDir, e.Name())); err != nil {
			s.logf("cleanup: %v", err)
			continue
		}
		removed = append(removed, e.Name())
	}
	if len(removed) > 0 {
		s.logf("cleanup: removed %d output files left in %s: %s", len(removed), s.cfg.SpoolDir, strings.Join(removed, " "))
	}
	cleanupStale(s.logf)
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

// Run starts a job for the caller.
func (s *Server) Run(ctx context.Context, req *tjobv1.RunRequest) (*tjobv1.RunResponse, error) {
	user := userOf(ctx)
	if req.GetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "no command to run")
	}
	if n := cmdBytes(req); n > maxCmdBytes {
		return nil, status.Errorf(codes.InvalidArgument, "command line too long: %d bytes in %d arguments, at most %d", n, len(req.GetArgs())+1, maxCmdBytes)
	}
	j := tjob.NewJob(req.GetPath(), req.GetArgs()...)
	j.ID = uuid.NewString()
	// The host's files are read-only to a job; it starts in, and may write
	// to, a private /tmp of its own.
	j.Dir = "/tmp"
	j.ReadOnlyRoot = true
	j.Env = jobEnv
	j.CPUPercent = s.cfg.CPUPercent
	j.MemoryMB = s.cfg.MemoryMB
	j.ReadBPS = s.cfg.ReadBPS
	j.WriteBPS = s.cfg.WriteBPS
	j.PidsMax = s.cfg.PidsMax
	j.IODevices = s.cfg.IODevices
	j.GracePeriod = s.cfg.GracePeriod
	j.SpoolDir = s.cfg.SpoolDir
	j.MaskPaths = s.cfg.MaskPaths

	if s.isClosing() {
		return nil, errShuttingDown
	}
	if s.idBlocks != nil {
		ids, ok := s.idBlocks.take()
		if !ok {
			return nil, status.Errorf(codes.ResourceExhausted, "no user namespace left: all %d blocks of %d IDs in the server's range are in use by running jobs", s.idBlocks.total(), UserNSBlock)
		}
		j.UserNS = ids
	}
	j.Run() // the final Status also comes from Summary
	if s.idBlocks != nil {
		// The block is the job's until its last process is gone.
		done := j.Done()
		go func() { <-done; s.idBlocks.give(j.UserNS) }()
	}
	if st := j.Summary(); st.State == tjob.StateFailed && errors.Is(st.Error, tjob.ErrInvalid) {
		j.Close()
		return nil, status.Error(codes.InvalidArgument, message(st.Error))
	}
	e := &entry{owner: user, job: j}
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.jobs[j.ID] = e
	}
	s.mu.Unlock()
	if closing { // shutdown began while the job started
		j.Close()
		return nil, errShuttingDown
	}
	setJob(ctx, j.ID)
	return &tjobv1.RunResponse{JobId: j.ID, Status: e.proto()}, nil
}

// Stop stops one of the caller's jobs and returns when it has ended.
func (s *Server) Stop(ctx context.Context, req *tjobv1.StopRequest) (*tjobv1.StopResponse, error) {
	e, err := s.lookup(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	stopped := make(chan error, 1)
	go func() { stopped <- e.job.Stop() }() // bounded by the grace period
	select {
	case err := <-stopped:
		if err != nil {
			return nil, status.Error(codes.Internal, message(err))
		}
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &tjobv1.StopResponse{Status: e.proto()}, nil
}

// Status lists the caller's jobs.
func (s *Server) Status(ctx context.Context, req *tjobv1.StatusRequest) (*tjobv1.StatusResponse, error) {
	if req.JobId != nil {
		e, err := s.lookup(ctx, req.GetJobId())
		if err != nil {
			return nil, err
		}
		return &tjobv1.StatusResponse{Jobs: []*tjobv1.Status{e.proto()}}, nil
	}
	user := userOf(ctx)
	s.mu.Lock()
	var mine []*entry
	for _, e := range s.jobs {
		if e.owner == user {
			mine = append(mine, e)
		}
	}
	s.mu.Unlock()
	resp := &tjobv1.StatusResponse{}
	for _, e := range mine {
		st := e.proto()
		if req.GetAll() || st.State == tjobv1.State_STATE_RUNNING || st.State == tjobv1.State_STATE_STARTING {
			resp.Jobs = append(resp.Jobs, st)
		}
	}
	slices.SortFunc(resp.Jobs, func(a, b *tjobv1.Status) int {
		if c := b.GetStarted().AsTime().Compare(a.GetStarted().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.JobId, b.JobId)
	})
	return resp, nil
}

// Logs streams one of the caller's jobs' output.
func (s *Server) Logs(req *tjobv1.LogsRequest, stream grpc.ServerStreamingServer[tjobv1.LogsResponse]) error {
	e, err := s.lookup(stream.Context(), req.GetJobId())
	if err != nil {
		return err
	}
	if st := e.job.Summary(); st.State == tjob.StateFailed {
		return status.Errorf(codes.FailedPrecondition, "job failed to start: %s", message(st.Error))
	}
	user := userOf(stream.Context())
	if !s.openStream(user) {
		return status.Errorf(codes.ResourceExhausted, "too many Logs streams open: at most %d at once per user", s.maxStreams())
	}
	defer s.closeStream(user)
	// The stream ends when the client goes or the server shuts down.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()

	r, err := e.job.Output(ctx, req.GetFollow())
	if err != nil {
		if errors.Is(err, tjob.ErrClosed) {
			return errShuttingDown
		}
		return status.Error(codes.Internal, message(err))
	}
	defer r.Close()
	buf := make([]byte, logChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			// Send marshals the message before it returns: buf may be reused.
			if err := stream.Send(&tjobv1.LogsResponse{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if rerr == io.EOF && req.GetFollow() {
			// The output can end before the job does (it closed its
			// stdout): a follower stops when the job has ended.
			select {
			case <-e.job.Done():
				return nil
			case <-ctx.Done():
				rerr = ctx.Err()
			}
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			return nil
		case s.stopping.Err() != nil:
			return errShuttingDown
		case ctx.Err() != nil:
			return status.FromContextError(ctx.Err()).Err()
		default:
			return status.Errorf(codes.Internal, "reading output: %s", message(rerr))
		}
	}
}

var errShuttingDown = status.Error(codes.Unavailable, "server is shutting down")

// cmdBytes is the size of the command line as the kernel counts it.
func cmdBytes(req *tjobv1.RunRequest) int {
	n := len(req.GetPath()) + 1
	for _, a := range req.GetArgs() {
		n += len(a) + 1
	}
	return n
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

// lookup finds the caller's job by its ID or a unique prefix of it. Another
// user's job is not found, exactly like one that does not exist.
func (s *Server) lookup(ctx context.Context, id string) (*entry, error) {
	user := userOf(ctx)
	setJob(ctx, clipID(id))
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "no job ID")
	}
	id = strings.ToLower(id)
	s.mu.Lock()
	e, ok := s.jobs[id]
	var matches []*entry
	if !ok || e.owner != user {
		for k, c := range s.jobs {
			if c.owner == user && strings.HasPrefix(k, id) {
				matches = append(matches, c)
			}
		}
		e = nil
		if len(matches) == 1 {
			e = matches[0]
		}
	}
	s.mu.Unlock()
	switch {
	case e != nil:
		setJob(ctx, e.job.ID)
		return e, nil
	case len(matches) == 0:
		return nil, status.Errorf(codes.NotFound, "no such job: %s", showID(id))
	}
	ids := make([]string, len(matches))
	for i, m := range matches {
		ids[i] = m.job.ID
	}
	slices.Sort(ids)
	const most = 10
	more := ""
	if len(ids) > most {
		more = fmt.Sprintf(" and %d more", len(ids)-most)
		ids = ids[:most]
	}
	return nil, status.Errorf(codes.InvalidArgument, "job ID %s is ambiguous: it matches %s%s", showID(id), strings.Join(ids, ", "), more)
}

func (s *Server) maxStreams() int {
	if s.cfg.MaxLogStreams > 0 {
		return s.cfg.MaxLogStreams
	}
	return DefaultMaxLogStreams
}

// openStream counts a Logs stream of user's, unless user has as many open
// as allowed.
func (s *Server) openStream(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[user] >= s.maxStreams() {
		return false
	}
	s.streams[user]++
	return true
}

func (s *Server) closeStream(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[user]--; s.streams[user] <= 0 {
		delete(s.streams, user)
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown ends the service: it stops taking calls on g, ends Logs streams,
// stops every job (SIGTERM, then SIGKILL after the grace period) and closes
// it, which removes its output and its cgroup. It returns when g has
// stopped; calls still running after the jobs are gone get drain to end,
// then are cut off.
func (s *Server) Shutdown(g *grpc.Server, drain time.Duration) {
	s.mu.Lock()
	s.closing = true
	all := make([]*entry, 0, len(s.jobs))
	for _, e := range s.jobs {
		all = append(all, e)
	}
	s.mu.Unlock()

	s.health.Shutdown()
	s.stop()
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()

	running := 0
	for _, e := range all {
		if e.job.Summary().Running() {
			running++
		}
	}
	s.logf("shutdown: stopping %d running jobs, closing %d", running, len(all))
	var wg sync.WaitGroup
	for _, e := range all {
		wg.Go(func() {
			if err := e.job.Close(); err != nil {
				s.logf("shutdown: job %s: %s", e.job.ID, message(err))
			}
		})
	}
	wg.Wait()

	select {
	case <-stopped:
	case <-time.After(drain):
		s.logf("shutdown: cutting off calls still running after %v", drain)
		g.Stop()
		<-stopped
	}
	s.logf("shutdown: done")
}

// proto is the entry's status as the API says it.
func (e *entry) proto() *tjobv1.Status {
	st := e.job.Summary()
	p := &tjobv1.Status{
		JobId:         st.ID,
		Cmd:           cutCmd(st.Cmd),
		ElapsedSecs:   st.Elapsed,
		Signal:        int32(st.Signal),
		OomKilled:     st.OOMKilled,
		StopRequested: st.StopRequested,
		Owner:         e.owner,
	}
	switch st.State {
	case tjob.StateStarting:
		p.State = tjobv1.State_STATE_STARTING
	case tjob.StateRunning:
		p.State = tjobv1.State_STATE_RUNNING
	case tjob.StateExited:
		p.State = tjobv1.State_STATE_EXITED
	case tjob.StateFailed:
		p.State = tjobv1.State_STATE_FAILED
	}
	if st.Started != 0 {
		p.Started = timestamppb.New(time.Unix(0, st.Started))
	}
	if st.Stopped != 0 {
		p.Stopped = timestamppb.New(time.Unix(0, st.Stopped))
	}
	if st.State == tjob.StateExited || st.State == tjob.StateFailed {
		p.Exit = &st.Exit
		p.Usage = &tjobv1.Usage{
			CpuSecs:         st.Usage.CPU.Seconds(),
			MemoryPeakBytes: st.Usage.MemoryPeak,
			ReadBytes:       st.Usage.ReadBytes,
			WriteBytes:      st.Usage.WriteBytes,
		}
	}
	if st.Error != nil {
		msg := message(st.Error)
		p.Error = &msg
	}
	return p
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
