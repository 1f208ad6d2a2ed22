package server

import (
	"strings"
	"time"

	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// record is what tjobs keeps of a job, in memory and in its state directory:
// what was asked (the spec) and, once it has ended, how it went. It is small
// whatever the job wrote: an ended job costs the server its record only.
type record struct {
	ID      string
	Owner   string
	Created time.Time

	// The spec.
	Args   []string // the command, then its arguments
	Env    []string // what the request added
	Dir    string   // as the job sees it
	Limits limits
	Grace  time.Duration
	Remove bool // remove once ended (RunRequest.remove)

	// The end; State is "running" until then.
	State         string
	Started       int64 // Unix ns
	Stopped       int64
	Exit          int64
	Signal        int
	OOMKilled     bool
	StopRequested bool
	Error         string
	Usage         tjob.Usage
	OutputBytes   int64
	OutputCut     bool
	DiskBytes     int64 // output and workspace on disk, once ended
}

// limits are a job's resource limits, as tjobs grants them.
type limits struct {
	CPUPercent, PidsMax         int
	MemoryMB, ReadBPS, WriteBPS int64
}

const (
	stateRunning = "running"
	stateExited  = "exited"
	stateFailed  = "failed"
)

func (r *record) ended() bool { return r.State != stateRunning }

// end fills in the job's end from its final status.
func (r *record) end(st tjob.Status) {
	r.State = stateExited
	if st.State == tjob.StateFailed {
		r.State = stateFailed
	}
	r.Started, r.Stopped = st.Started, st.Stopped
	r.Exit, r.Signal = st.Exit, int(st.Signal)
	r.OOMKilled, r.StopRequested = st.OOMKilled, st.StopRequested
	r.Usage = st.Usage
	r.OutputBytes, r.OutputCut = st.OutputBytes, st.OutputCut
	r.Error = ""
	if st.Error != nil {
		r.Error = message(st.Error)
	}
}

// proto is the record as the API says it; st is the running job's status
// now (nil once it has ended).
func (r *record) proto(st *tjob.Status) *tjobv1.Status {
	p := &tjobv1.Status{
		JobId:       r.ID,
		Cmd:         cutCmd(joinArgs(r.Args)),
		Args:        r.Args,
		Owner:       r.Owner,
		Env:         r.Env,
		Dir:         r.Dir,
		GracePeriod: durationpb.New(r.Grace),
		Remove:      r.Remove,
		Limits: &tjobv1.Limits{
			CpuPercent: int32(r.Limits.CPUPercent), MemoryMb: r.Limits.MemoryMB,
			ReadBps: r.Limits.ReadBPS, WriteBps: r.Limits.WriteBPS, PidsMax: int32(r.Limits.PidsMax),
		},
	}
	if st != nil && !st.Running() { // just ended, its record not yet updated
		ended := *r
		ended.end(*st)
		return ended.proto(nil)
	}
	if st != nil {
		p.State = protoState(st.State)
		p.ElapsedSecs = st.Elapsed
		p.StopRequested = st.StopRequested
		p.OutputBytes, p.OutputCut = st.OutputBytes, st.OutputCut
		setTimes(p, st.Started, st.Stopped)
		return p
	}
	p.State = tjobv1.State_STATE_EXITED
	if r.State == stateFailed {
		p.State = tjobv1.State_STATE_FAILED
	}
	setTimes(p, r.Started, r.Stopped)
	if r.Started != 0 && r.Stopped != 0 {
		p.ElapsedSecs = time.Duration(r.Stopped - r.Started).Seconds()
	}
	exit := r.Exit
	p.Exit = &exit
	p.Signal = int32(r.Signal)
	p.OomKilled, p.StopRequested = r.OOMKilled, r.StopRequested
	p.OutputBytes, p.OutputCut = r.OutputBytes, r.OutputCut
	p.Usage = &tjobv1.Usage{
		CpuSecs:         r.Usage.CPU.Seconds(),
		MemoryPeakBytes: r.Usage.MemoryPeak,
		ReadBytes:       r.Usage.ReadBytes,
		WriteBytes:      r.Usage.WriteBytes,
	}
	if r.Error != "" {
		e := r.Error
		p.Error = &e
	}
	return p
}

// joinArgs is the command line with its arguments separated by spaces, as
// Status.cmd says it.
func joinArgs(args []string) string { return strings.Join(args, " ") }

func protoState(s tjob.State) tjobv1.State {
	switch s {
	case tjob.StateStarting:
		return tjobv1.State_STATE_STARTING
	case tjob.StateRunning:
		return tjobv1.State_STATE_RUNNING
	case tjob.StateExited:
		return tjobv1.State_STATE_EXITED
	case tjob.StateFailed:
		return tjobv1.State_STATE_FAILED
	}
	return tjobv1.State_STATE_UNSPECIFIED
}

func setTimes(p *tjobv1.Status, started, stopped int64) {
	if started != 0 {
		p.Started = timestamppb.New(time.Unix(0, started))
	}
	if stopped != 0 {
		p.Stopped = timestamppb.New(time.Unix(0, stopped))
	}
}
