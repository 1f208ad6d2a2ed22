package server

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/neildo/tjob"
)

// A job's life on the server, after Run: a goroutine waits for its end,
// writes its final record, and lets the library's Job go (the output stays,
// with KeepOutput), so that an ended job costs the server its record only.
// Jobs leave by Remove, by RunRequest.remove once the clients that follow or
// wait for them are done, and by retention: the oldest ended jobs of a user
// past Config.Retain, those older than Config.RetainFor, and, when the disk
// quota is full, the user's oldest to make room.

// unclaimedFor is how long a job run with remove is kept once it has ended
// and no client holds it, unless a Wait had its final status: for the Wait
// or Logs that comes after its Run, or after a Logs stream.
var unclaimedFor = 10 * time.Second

// janitorEvery is how often retention by age and the measure of running
// jobs' workspaces happen.
const janitorEvery = time.Minute

// watch waits for e's job to end, then finalizes it.
func (s *Server) watch(e *entry) {
	defer s.watchers.Done()
	<-e.job.Done()
	s.finalize(e)
}

// finalize writes the record of a job that has ended and lets its Job go.
func (s *Server) finalize(e *entry) {
	s.mu.Lock()
	j, old := e.job, e.rec
	s.mu.Unlock()
	rec := *old
	rec.end(j.Summary())
	rec.DiskBytes = rec.OutputBytes + diskUsage(s.state.workspace(rec.ID))
	if err := s.state.save(&rec); err != nil {
		s.logf("job %s: %v", rec.ID, err)
	}
	if err := j.Close(); err != nil {
		s.logf("job %s: %s", rec.ID, message(err))
	}
	if s.idBlocks != nil && j.UserNS.Size > 0 {
		s.idBlocks.give(j.UserNS)
	}

	s.mu.Lock()
	s.setRecord(e, &rec)
	e.job = nil
	s.running[rec.Owner]--
	if s.running[rec.Owner] <= 0 {
		delete(s.running, rec.Owner)
	}
	if rec.Remove && e.refs == 0 {
		s.removeLater(e)
	}
	s.mu.Unlock()
	close(e.finalized)
	// A shutdown keeps every record; the next server applies retention
	// when it recovers them.
	if !s.isClosing() {
		s.retain(rec.Owner, time.Now())
	}
}

// removeLater removes e, run with remove, unclaimedFor from now, unless a
// client holds it then or has since; the caller holds s.mu.
func (s *Server) removeLater(e *entry) {
	e.idleSince = time.Now()
	time.AfterFunc(unclaimedFor, func() {
		s.mu.Lock()
		remove := e.refs == 0 && time.Since(e.idleSince) >= unclaimedFor && !e.removed && !s.closing
		if remove {
			s.detach(e)
		}
		s.mu.Unlock()
		if remove {
			s.forget(e.id)
		}
	})
}

// hold counts a Logs stream or Wait of e, which RunRequest.remove waits for;
// release ends it, and removes the job if it was the last, the job is to be
// removed and a Wait had its final status (else a while later).
func (s *Server) hold(e *entry) {
	s.mu.Lock()
	e.refs++
	s.mu.Unlock()
}

func (s *Server) release(e *entry) {
	s.mu.Lock()
	e.refs--
	idle := e.refs == 0 && e.rec.ended() && e.rec.Remove && !e.removed && !s.closing
	remove := idle && e.waited
	if remove {
		s.detach(e)
	} else if idle {
		s.removeLater(e)
	}
	s.mu.Unlock()
	if remove {
		s.forget(e.id)
	}
}

// detach takes e off the server's books; the caller holds s.mu and then
// calls forget for its files.
func (s *Server) detach(e *entry) {
	e.removed = true
	s.disk -= e.rec.DiskBytes
	delete(s.jobs, e.id)
}

// setRecord replaces e's record, keeping the disk count; the caller holds
// s.mu. A record is never changed once an entry has it: readers take it
// under the lock and use it without.
func (s *Server) setRecord(e *entry, rec *record) {
	if e.rec != nil && !e.removed {
		s.disk -= e.rec.DiskBytes
	}
	e.rec = rec
	if !e.removed {
		s.disk += rec.DiskBytes
	}
}

// add puts a new entry on the server's books; the caller holds s.mu.
func (s *Server) add(e *entry) {
	s.jobs[e.id] = e
	s.disk += e.rec.DiskBytes
}

// forget removes a job's files: record, output and workspace.
func (s *Server) forget(id string) {
	if err := s.state.forget(id, tjob.RemoveOutput); err != nil {
		s.logf("removing job %s: %s", id, message(err))
	}
}

// retain removes user's oldest ended jobs past Config.Retain and those that
// ended before now less Config.RetainFor.
func (s *Server) retain(user string, now time.Time) {
	s.mu.Lock()
	var ended []*entry
	for _, e := range s.jobs {
		if e.rec.Owner == user && e.rec.ended() {
			ended = append(ended, e)
		}
	}
	if !s.overRetention(ended, now) {
		s.mu.Unlock()
		return
	}
	byAge(ended)
	var gone []string
	for i, e := range ended {
		tooMany := s.cfg.Retain > 0 && len(ended)-i > s.cfg.Retain
		tooOld := s.cfg.RetainFor > 0 && now.Sub(time.Unix(0, e.rec.Stopped)) > s.cfg.RetainFor
		if tooMany || tooOld {
			s.detach(e)
			gone = append(gone, e.id)
		}
	}
	s.mu.Unlock()
	for _, id := range gone {
		s.forget(id)
	}
}

// overRetention reports whether any of a user's ended jobs is past
// retention, without sorting them: the common case at a job's end.
func (s *Server) overRetention(ended []*entry, now time.Time) bool {
	if s.cfg.Retain > 0 && len(ended) > s.cfg.Retain {
		return true
	}
	if s.cfg.RetainFor > 0 {
		for _, e := range ended {
			if now.Sub(time.Unix(0, e.rec.Stopped)) > s.cfg.RetainFor {
				return true
			}
		}
	}
	return false
}

// byAge sorts entries oldest first, by when they ended.
func byAge(es []*entry) {
	slices.SortFunc(es, func(a, b *entry) int {
		if a.rec.Stopped != b.rec.Stopped {
			return int(min(max(a.rec.Stopped-b.rec.Stopped, -1), 1))
		}
		return strings.Compare(a.id, b.id)
	})
}

// makeRoom removes user's oldest ended jobs while the disk quota is full,
// and reports whether there is room now.
func (s *Server) makeRoom(user string) (used int64, ok bool) {
	if s.cfg.MaxDisk == 0 {
		return 0, true
	}
	for {
		s.mu.Lock()
		used = s.disk
		if used < s.cfg.MaxDisk {
			s.mu.Unlock()
			return used, true
		}
		var ended []*entry
		for _, e := range s.jobs {
			if e.rec.Owner == user && e.rec.ended() {
				ended = append(ended, e)
			}
		}
		if len(ended) == 0 {
			s.mu.Unlock()
			return used, false
		}
		byAge(ended)
		s.detach(ended[0])
		s.mu.Unlock()
		s.forget(ended[0].id)
	}
}

// diskUsage is the space the files under dir take on disk.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
		}
		return nil
	})
	return n
}

// janitorLoop applies retention by age and measures running jobs'
// workspaces, every janitorEvery, until shutdown.
func (s *Server) janitorLoop() {
	defer close(s.janitor)
	tick := time.NewTicker(janitorEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stopping.Done():
			return
		case now := <-tick.C:
			s.sweep(now)
		}
	}
}

// sweep runs retention for every user and measures what the running jobs
// keep on disk: their output and workspace, for the disk quota.
func (s *Server) sweep(now time.Time) {
	s.mu.Lock()
	users := map[string]bool{}
	var running []*entry
	for _, e := range s.jobs {
		users[e.rec.Owner] = true
		if e.job != nil {
			running = append(running, e)
		}
	}
	s.mu.Unlock()
	for u := range users {
		s.retain(u, now)
	}
	for _, e := range running {
		s.mu.Lock()
		j := e.job
		s.mu.Unlock()
		if j == nil {
			continue
		}
		n := j.Summary().OutputBytes + diskUsage(s.state.workspace(e.id))
		s.mu.Lock()
		if e.job != nil { // its record is still the running one
			rec := *e.rec
			rec.DiskBytes = n
			s.setRecord(e, &rec)
		}
		s.mu.Unlock()
	}
}

// recover takes over the state directory: the records of the jobs a
// previous server kept (a job that was running when it stopped is ended, and
// says so), and removes what has no record (output, workspaces) and the
// cgroups a crashed server left.
func (s *Server) recover() error {
	recs, bad, err := s.state.load()
	if err != nil {
		return err
	}
	for _, b := range bad {
		s.logf("recover: skipping a damaged record: %s", b)
	}
	now := time.Now()
	known := map[string]bool{}
	var dropped int
	for _, rec := range recs {
		if rec.Remove && rec.ended() { // its clients left with the server
			s.forget(rec.ID)
			dropped++
			continue
		}
		known[rec.ID] = true
		if !rec.ended() {
			rec.State = stateExited
			rec.Stopped = now.UnixNano()
			rec.Exit = -1
			rec.Error = "tjobs stopped while the job ran: its processes were ended with it, and how the job ended is not known"
			if f, err := tjob.OpenOutput(s.state.spool(), rec.ID); err == nil {
				if fi, err := f.Stat(); err == nil {
					rec.OutputBytes = fi.Size()
				}
				f.Close()
			}
			rec.DiskBytes = rec.OutputBytes + diskUsage(s.state.workspace(rec.ID))
			if err := s.state.save(rec); err != nil {
				s.logf("recover: %v", err)
			}
		}
		s.add(&entry{id: rec.ID, rec: rec, finalized: closedChan})
	}
	if len(recs) > 0 {
		s.logf("recover: %d jobs from %s", len(recs)-dropped, s.cfg.StateDir)
	}
	if dropped > 0 {
		s.logf("recover: removed %d ended jobs that were run with remove", dropped)
	}
	s.removeOrphans(known)
	cleanupStale(s.logf)
	users := map[string]bool{}
	for _, rec := range recs {
		users[rec.Owner] = true
	}
	for u := range users {
		s.retain(u, now)
	}
	return nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// removeOrphans removes outputs and workspaces that no record claims: what
// a server that crashed before it wrote a job's record, or while it removed
// one, left.
func (s *Server) removeOrphans(known map[string]bool) {
	var removed []string
	ids, err := tjob.OutputIDs(s.state.spool())
	if err != nil {
		s.logf("recover: %s", message(err))
	}
	for _, id := range ids {
		if !known[id] {
			if err := tjob.RemoveOutput(s.state.spool(), id); err != nil {
				s.logf("recover: %s", message(err))
				continue
			}
			removed = append(removed, "output "+id)
		}
	}
	ents, err := os.ReadDir(filepath.Join(s.cfg.StateDir, workDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.logf("recover: %v", err)
	}
	for _, e := range ents {
		if !known[e.Name()] && e.IsDir() {
			if err := os.RemoveAll(s.state.workspace(e.Name())); err != nil {
				s.logf("recover: %v", err)
				continue
			}
			removed = append(removed, "workspace "+e.Name())
		}
	}
	if len(removed) > 0 {
		s.logf("recover: removed %d files of jobs with no record: %s", len(removed), strings.Join(removed, ", "))
	}
}
