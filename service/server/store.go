package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The state directory is tjobs's own, and only one tjobs uses it at a time:
//
//	lock          flock(2)ed by the tjobs that owns the directory; its pid
//	jobs/ID.json  each job's record, replaced whole (written aside, synced,
//	              renamed), so that a crash leaves the old record or the
//	              new one, never a mix
//	spool/ID.out  each job's output (the library's, with KeepOutput)
//	work/ID/      each job's workspace, which the job sees as /tmp
//
// Records are files rather than a database: one small file a job, written
// twice in its life (start and end) and once more if it is removed, needs
// no more, and a damaged one costs one job's record, not the store. A record
// carries a CRC-32C of its content: one damaged by hand or a torn write is
// skipped, and logged, at start.

const (
	lockFile  = "lock"
	jobsDir   = "jobs"
	spoolDir  = "spool"
	workDir   = "work"
	recordExt = ".json"
)

// stateDir is an open, locked state directory.
type stateDir struct {
	path string
	lock *os.File
}

// ErrStateInUse: another tjobs holds the state directory.
var ErrStateInUse = errors.New("state directory in use")

// openState makes (if need be) and locks the state directory at path,
// before anything in it is read or written. A directory another tjobs holds
// is refused at once, naming the holder.
func openState(path string) (*stateDir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(path, lockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(holder))
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("%w: %s is held by tjobs pid %s", ErrStateInUse, path, pid)
		}
		return nil, fmt.Errorf("state directory: locking %s: %w", f.Name(), err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	for _, d := range []string{jobsDir, spoolDir, workDir} {
		if err := os.MkdirAll(filepath.Join(path, d), 0o700); err != nil {
			f.Close()
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	return &stateDir{path: path, lock: f}, nil
}

// close gives the directory up.
func (d *stateDir) close() { d.lock.Close() }

func (d *stateDir) spool() string              { return filepath.Join(d.path, spoolDir) }
func (d *stateDir) workspace(id string) string { return filepath.Join(d.path, workDir, id) }
func (d *stateDir) recordFile(id string) string {
	return filepath.Join(d.path, jobsDir, id+recordExt)
}

// envelope is a record as stored: the record's JSON and its checksum.
type envelope struct {
	CRC    uint32          `json:"crc32c"`
	Record json.RawMessage `json:"record"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// save writes rec durably: aside, synced, renamed over the old one, and the
// directory synced, so that the record survives a power cut once save has
// returned.
func (d *stateDir) save(rec *record) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(envelope{CRC: crc32.Checksum(body, castagnoli), Record: body})
	if err != nil {
		return err
	}
	final := d.recordFile(rec.ID)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("saving job %s: %w", rec.ID, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("saving job %s: %w", rec.ID, err)
	}
	return syncDir(filepath.Dir(final))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// forget removes a job's record, output and workspace.
func (d *stateDir) forget(id string, removeOutput func(dir, id string) error) error {
	// The record first: a crash after it leaves files with no record,
	// which the next server removes, never a record without its output.
	if err := os.Remove(d.recordFile(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return errors.Join(
		os.RemoveAll(d.workspace(id)),
		removeOutput(d.spool(), id),
	)
}

// load reads every record. A record that does not parse or whose checksum
// does not match is skipped and reported in bad (file: why); files left
// half-written by a crash (*.tmp) are removed.
func (d *stateDir) load() (recs []*record, bad []string, err error) {
	dir := filepath.Join(d.path, jobsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading records: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		file := filepath.Join(dir, name)
		switch {
		case strings.HasSuffix(name, recordExt+".tmp"):
			os.Remove(file)
			continue
		case !strings.HasSuffix(name, recordExt) || !e.Type().IsRegular():
			continue
		}
		rec, why := readRecord(file)
		if why != "" {
			bad = append(bad, fmt.Sprintf("%s: %s", file, why))
			continue
		}
		if rec.ID+recordExt != name {
			bad = append(bad, fmt.Sprintf("%s: holds job %q", file, rec.ID))
			continue
		}
		recs = append(recs, rec)
	}
	return recs, bad, nil
}

// readRecord reads one record file; why says what is wrong with it.
func readRecord(file string) (rec *record, why string) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err.Error()
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil || env.Record == nil {
		return nil, "not a record (damaged or cut short)"
	}
	if crc32.Checksum(env.Record, castagnoli) != env.CRC {
		return nil, "checksum mismatch (damaged)"
	}
	rec = &record{}
	if err := json.Unmarshal(env.Record, rec); err != nil || rec.ID == "" || rec.Owner == "" {
		return nil, "not a record (damaged)"
	}
	return rec, ""
}
