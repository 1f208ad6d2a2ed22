package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/google/uuid"
	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Run starts a job for the caller.
func (s *Server) Run(ctx context.Context, req *tjobv1.RunRequest) (*tjobv1.RunResponse, error) {
	user := userOf(ctx)
	sp, err := s.cfg.spec(req)
	if err != nil {
		return nil, err
	}
	if err := s.admit(user); err != nil {
		return nil, err
	}
	admitted := true
	defer func() {
		if admitted { // not handed to a watcher
			s.mu.Lock()
			s.running[user]--
			s.mu.Unlock()
		}
	}()
	// Wait for a start slot, in turn (a channel's waiting senders go
	// first come first served). A client that stops waiting leaves the
	// queue, and nothing is made for it.
	select {
	case s.startSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.stopping.Done():
		return nil, errShuttingDown
	}
	freeSlot := sync.OnceFunc(func() { <-s.startSlots })
	defer freeSlot()
	if err := ctx.Err(); err != nil { // gone as its turn came
		return nil, status.FromContextError(err).Err()
	}

	id := uuid.NewString()
	setJob(ctx, id)
	j := tjob.NewJob(sp.args[0], sp.args[1:]...)
	j.ID = id
	sp.apply(j)
	j.ReadOnlyRoot = true
	j.TmpDir = s.state.workspace(id)
	j.SpoolDir = s.state.spool()
	j.KeepOutput = true
	j.MaxOutput = s.cfg.MaxOutput
	// The state directory holds every job's record and workspace: the
	// job's own is its /tmp, the others are none of its business.
	j.MaskPaths = append(slices.Clip(s.cfg.MaskPaths), s.cfg.StateDir)
	j.IODevices = s.cfg.IODevices
	if s.idBlocks != nil {
		ids, ok := s.idBlocks.take()
		if !ok {
			return nil, status.Errorf(codes.ResourceExhausted, "no user namespace left: all %d blocks of %d IDs in the server's -userns-range are in use by running jobs", s.idBlocks.total(), UserNSBlock)
		}
		j.UserNS = ids
	}
	rec := &record{
		ID: id, Owner: user, Created: time.Now(), Args: sp.args, Env: sp.env, Dir: sp.dir,
		Limits: sp.limits, Grace: sp.grace, Remove: sp.remove, State: stateRunning,
	}
	// The record first: a server that crashes from here on finds it, and
	// keeps the job's output and workspace.
	err = s.makeWorkspace(j, sp.dir)
	if err == nil {
		err = s.state.save(rec)
	}
	if err != nil {
		s.abandon(j, rec)
		code := codes.Internal
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			code = codes.ResourceExhausted
		}
		return nil, status.Errorf(code, "cannot keep the job in the state directory %s: %v", s.cfg.StateDir, err)
	}

	e := &entry{id: rec.ID, rec: rec, job: j, finalized: make(chan struct{})}
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.add(e)
		s.starting.Add(1)
	}
	s.mu.Unlock()
	if closing {
		s.abandon(j, rec)
		return nil, errShuttingDown
	}
	defer s.starting.Done() // once the job has its watcher, or is gone
	j.Run()
	freeSlot()
	if st := j.Summary(); st.State == tjob.StateFailed && errors.Is(st.Error, tjob.ErrInvalid) {
		s.mu.Lock()
		s.detach(e)
		s.mu.Unlock()
		j.Close()
		s.abandon(j, rec)
		return nil, status.Error(codes.InvalidArgument, invalidMessage(st.Error))
	}
	admitted = false
	s.watchers.Add(1)
	go s.watch(e)
	return &tjobv1.RunResponse{JobId: id, Status: rec.proto(statusOf(j))}, nil
}

// apiFields are the RunRequest fields of the library's Job fields that a
// request sets, so that an error names what the client sent.
var apiFields = map[string]string{
	"Path":        "path",
	"CPUPercent":  "limits.cpu_percent",
	"MemoryMB":    "limits.memory_mb",
	"ReadBPS":     "limits.read_bps",
	"WriteBPS":    "limits.write_bps",
	"PidsMax":     "limits.pids_max",
	"GracePeriod": "grace_period",
}

// invalidMessage is the message of a job the library refused, in the API's
// names where the request set the field.
func invalidMessage(err error) string {
	var ce *tjob.ConfigError
	if !errors.As(err, &ce) {
		return message(err)
	}
	field, ok := apiFields[ce.Field]
	if strings.HasPrefix(ce.Field, "Args[") {
		field, ok = "args["+strings.TrimPrefix(ce.Field, "Args["), true
	}
	if !ok {
		return message(err)
	}
	return field + " " + strings.ReplaceAll(ce.Reason, "tjob: ", "")
}

// admit counts a job the caller is about to run, unless a quota says no.
func (s *Server) admit(user string) error {
	if s.isClosing() {
		return errShuttingDown
	}
	if used, ok := s.makeRoom(user); !ok {
		s.logf("quota: user=%s refused: -max-disk %s is full (%s used)", field(user), units.BytesSize(float64(s.cfg.MaxDisk)), units.BytesSize(float64(used)))
		return status.Errorf(codes.ResourceExhausted, "disk quota full: outputs and workspaces use %s of the server's -max-disk %s; remove jobs (tjob rm) to make room",
			units.BytesSize(float64(used)), units.BytesSize(float64(s.cfg.MaxDisk)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.running[user]; s.cfg.MaxRunning > 0 && n >= s.cfg.MaxRunning {
		s.logf("quota: user=%s refused: -max-running %d reached", field(user), s.cfg.MaxRunning)
		return status.Errorf(codes.ResourceExhausted, "running-jobs quota reached: you have %d jobs running, the server's -max-running is %d", n, s.cfg.MaxRunning)
	}
	s.running[user]++
	return nil
}

// makeWorkspace makes the job's workspace, its /tmp, on the state
// directory's disk, with dir (as the job sees it) inside, all the job's
// root's.
func (s *Server) makeWorkspace(j *tjob.Job, dir string) error {
	ws := j.TmpDir
	if err := os.Mkdir(ws, 0o755); err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	owner := int(j.UserNS.HostID) // root's, without a user namespace
	rel, _ := filepath.Rel(workspaceDir, dir)
	p := ws
	for _, part := range strings.Split(rel, "/") {
		if part != "." {
			p = filepath.Join(p, part)
			if err := os.Mkdir(p, 0o755); err != nil {
				return fmt.Errorf("workspace: %w", err)
			}
		}
		if err := os.Chown(p, owner, owner); err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
	}
	return os.Chown(ws, owner, owner)
}

// abandon undoes a Run that did not start its job.
func (s *Server) abandon(j *tjob.Job, rec *record) {
	if s.idBlocks != nil && j.UserNS.Size > 0 {
		s.idBlocks.give(j.UserNS)
	}
	s.forget(rec.ID)
}

// statusOf is a Job's status for proto: nil for no job.
func statusOf(j *tjob.Job) *tjob.Status {
	if j == nil {
		return nil
	}
	st := j.Summary()
	return &st
}

// view is an entry's record and its job's status now, for proto.
func (s *Server) view(e *entry) *tjobv1.Status {
	s.mu.Lock()
	rec, j := e.rec, e.job
	s.mu.Unlock()
	return rec.proto(statusOf(j))
}

// Stop stops one of the caller's jobs and returns when it has ended.
func (s *Server) Stop(ctx context.Context, req *tjobv1.StopRequest) (*tjobv1.StopResponse, error) {
	e, err := s.lookup(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	stop := (*tjob.Job).Stop // SIGTERM, and SIGKILL after the job's grace
	if g := req.GetGracePeriod(); g != nil {
		grace := g.AsDuration()
		if grace < 0 || !g.IsValid() {
			return nil, status.Errorf(codes.InvalidArgument, "grace_period %v is negative", grace)
		}
		stop = func(j *tjob.Job) error { return j.StopWithin(grace) }
		if grace == 0 {
			stop = (*tjob.Job).Kill
		}
	}
	if err := s.stopJob(ctx, e, stop); err != nil {
		return nil, err
	}
	return &tjobv1.StopResponse{Status: s.view(e)}, nil
}

// stopJob stops e's job with stop, if it runs, and returns once it has
// ended, or when ctx is done.
func (s *Server) stopJob(ctx context.Context, e *entry, stop func(*tjob.Job) error) error {
	s.mu.Lock()
	j := e.job
	s.mu.Unlock()
	if j == nil {
		return nil
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop(j) }() // bounded by the grace period
	select {
	case err := <-stopped:
		if err != nil {
			return status.Error(codes.Internal, message(err))
		}
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// Page sizes of Status.
const (
	maxPageJobs  = 1000
	maxPageBytes = 1 << 20
)

// Status lists the caller's jobs, a page at a time.
func (s *Server) Status(ctx context.Context, req *tjobv1.StatusRequest) (*tjobv1.StatusResponse, error) {
	if req.JobId != nil {
		e, err := s.lookup(ctx, req.GetJobId())
		if err != nil {
			return nil, err
		}
		return &tjobv1.StatusResponse{Jobs: []*tjobv1.Status{s.view(e)}}, nil
	}
	after, err := parseToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size <= 0 || size > maxPageJobs {
		size = maxPageJobs
	}
	user := userOf(ctx)
	type item struct {
		rec *record
		job *tjob.Job
	}
	s.mu.Lock()
	var mine []item
	for _, e := range s.jobs {
		if e.rec.Owner == user && (req.GetAll() || e.job != nil) && after.before(e.rec) {
			mine = append(mine, item{e.rec, e.job})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(mine, func(a, b item) int { return newestFirst(a.rec, b.rec) })

	resp := &tjobv1.StatusResponse{}
	bytes := 0
	for i, it := range mine {
		st := it.rec.proto(statusOf(it.job))
		if !req.GetAll() && st.State != tjobv1.State_STATE_RUNNING && st.State != tjobv1.State_STATE_STARTING {
			continue
		}
		n := proto.Size(st)
		if len(resp.Jobs) == size || (len(resp.Jobs) > 0 && bytes+n > maxPageBytes) {
			resp.NextPageToken = tokenAfter(mine[i-1].rec)
			break
		}
		resp.Jobs = append(resp.Jobs, st)
		bytes += n
	}
	return resp, nil
}

// newestFirst orders records newest first, then by ID.
func newestFirst(a, b *record) int {
	if c := b.Created.Compare(a.Created); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// cursor is where a page of Status ends: the last job it listed.
type cursor struct {
	created int64
	id      string
	set     bool
}

// before reports whether rec comes after the cursor, newest first.
func (c cursor) before(rec *record) bool {
	if !c.set {
		return true
	}
	t := rec.Created.UnixNano()
	return t < c.created || t == c.created && rec.ID > c.id
}

func tokenAfter(rec *record) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(rec.Created.UnixNano(), 10) + "/" + rec.ID))
}

func parseToken(tok string) (cursor, error) {
	if tok == "" {
		return cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	t, id, ok := strings.Cut(string(b), "/")
	n, nerr := strconv.ParseInt(t, 10, 64)
	if err != nil || !ok || nerr != nil {
		return cursor{}, status.Errorf(codes.InvalidArgument, "page_token %q is not one this server gave", clipText(tok))
	}
	return cursor{created: n, id: id, set: true}, nil
}

// Logs streams one of the caller's jobs' output.
func (s *Server) Logs(req *tjobv1.LogsRequest, stream grpc.ServerStreamingServer[tjobv1.LogsResponse]) error {
	ctx := stream.Context()
	e, err := s.lookup(ctx, req.GetJobId())
	if err != nil {
		return err
	}
	if st := s.view(e); st.GetState() == tjobv1.State_STATE_FAILED {
		return status.Errorf(codes.FailedPrecondition, "job failed to start: %s", st.GetError())
	}
	user := userOf(ctx)
	if !s.openStream(user) {
		return status.Errorf(codes.ResourceExhausted, "too many Logs streams open: at most %d at once per user", s.maxStreams())
	}
	defer s.closeStream(user)
	s.hold(e)
	defer s.release(e)
	// The stream ends when the client goes or the server shuts down.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()

	r, err := s.output(ctx, e, req.GetFollow())
	if err != nil {
		return err
	}
	defer r.Close()
	bufs := newChunkBuffers()
	caughtUp := false
	for {
		buf, err := bufs.next(ctx, caughtUp)
		if err != nil { // the client went, or the server is stopping
			return s.streamStopped(ctx)
		}
		n, rerr := r.Read(*buf)
		// A read that does not fill the buffer has caught up with the
		// job: the next waits in a small buffer. One that fills it has
		// output to catch up with again.
		caughtUp = n < len(*buf)
		if n > 0 {
			// gRPC takes buf over (logsCodec) and gives it back once
			// written.
			*buf = (*buf)[:n]
			if err := stream.SendMsg(&logsChunk{buf: buf, from: bufs}); err != nil {
				return err
			}
		} else {
			bufs.Put(buf)
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			// A follower's EOF comes after the job's final status.
			if st := s.view(e); st.GetOutputCut() {
				return stream.Send(&tjobv1.LogsResponse{CutAt: st.GetOutputBytes()})
			}
			return nil
		case s.stopping.Err() != nil || ctx.Err() != nil:
			return s.streamStopped(ctx)
		default:
			return status.Errorf(codes.Internal, "reading output: %s", message(rerr))
		}
	}
}

// streamStopped is the status of a Logs stream whose context ended: the
// server is stopping, or the client went.
func (s *Server) streamStopped(ctx context.Context) error {
	if s.stopping.Err() != nil {
		return errShuttingDown
	}
	return status.FromContextError(ctx.Err()).Err()
}

// output opens e's output: the running job's, which a follower follows, or
// what an ended job left.
func (s *Server) output(ctx context.Context, e *entry, follow bool) (io.ReadCloser, error) {
	s.mu.Lock()
	j := e.job
	s.mu.Unlock()
	if j != nil {
		r, err := j.Output(ctx, follow)
		if !errors.Is(err, tjob.ErrClosed) { // closed: it just ended
			if err != nil {
				return nil, status.Error(codes.Internal, message(err))
			}
			return r, nil
		}
	}
	f, err := tjob.OpenOutput(s.state.spool(), e.id)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "output of job %s: %s", e.id, message(err))
	}
	return f, nil
}

// Wait returns a job's final status once it has ended.
func (s *Server) Wait(ctx context.Context, req *tjobv1.WaitRequest) (*tjobv1.WaitResponse, error) {
	e, err := s.lookup(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	s.hold(e)
	defer s.release(e)
	// Until its record is final: the job has ended, and can be removed.
	select {
	case <-e.finalized:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.stopping.Done():
		return nil, errShuttingDown
	}
	s.mu.Lock()
	e.waited = true
	s.mu.Unlock()
	return &tjobv1.WaitResponse{Status: s.view(e)}, nil
}

// Remove forgets one of the caller's jobs.
func (s *Server) Remove(ctx context.Context, req *tjobv1.RemoveRequest) (*tjobv1.RemoveResponse, error) {
	e, err := s.lookup(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	id := e.id
	s.mu.Lock()
	running := e.job != nil
	s.mu.Unlock()
	if running {
		if !req.GetForce() {
			return nil, status.Errorf(codes.FailedPrecondition, "job %s is running: stop it first, or remove it with force (tjob rm -f)", id)
		}
		if err := s.stopJob(ctx, e, (*tjob.Job).Kill); err != nil { // as docker rm -f
			return nil, err
		}
	}
	select { // its record written, and its Job let go
	case <-e.finalized:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	s.mu.Lock()
	gone := e.removed
	if !gone {
		s.detach(e)
	}
	s.mu.Unlock()
	if gone {
		return nil, status.Errorf(codes.NotFound, "no such job: %s", id)
	}
	s.forget(id)
	return &tjobv1.RemoveResponse{JobId: id}, nil
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
	if !ok || e.rec.Owner != user {
		for k, c := range s.jobs {
			if c.rec.Owner == user && strings.HasPrefix(k, id) {
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
		setJob(ctx, e.id)
		return e, nil
	case len(matches) == 0:
		return nil, status.Errorf(codes.NotFound, "no such job: %s", showID(id))
	}
	ids := make([]string, len(matches))
	for i, m := range matches {
		ids[i] = m.id
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
