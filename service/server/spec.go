package server

import (
	"path"
	"strings"
	"time"

	"github.com/neildo/tjob"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A RunRequest asks for limits, an environment, a directory and a grace
// period; zero means the server's default, and nothing may pass the
// server's caps. spec turns a request into what the job gets, or says
// which field is wrong, with its value and the cap, as InvalidArgument.

const (
	// maxCmdBytes is the longest command line Run takes: the path and the
	// arguments, each counted with its terminating NUL as the kernel counts
	// them. It is the kernel's limit for a single argument (MAX_ARG_STRLEN).
	// The environment the request adds has the same bound.
	maxCmdBytes = 128 << 10
	// workspaceDir is where the job sees its workspace.
	workspaceDir = "/tmp"
)

// baseEnv is the environment of every job: the server's own is not the job's
// business. HOME is the job's workspace, the one place it may write.
var baseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=" + workspaceDir,
}

// jobSpec is a request made into a job's settings.
type jobSpec struct {
	args   []string
	env    []string // the request's own, KEY=value
	dir    string   // inside the workspace, as the job sees it
	limits limits
	grace  time.Duration
	remove bool
}

// spec checks req against cfg's defaults and caps.
func (cfg *Config) spec(req *tjobv1.RunRequest) (*jobSpec, error) {
	if req.GetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "no command to run")
	}
	args := append([]string{req.GetPath()}, req.GetArgs()...)
	if n := nulBytes(args); n > maxCmdBytes {
		return nil, status.Errorf(codes.InvalidArgument, "command line too long: %d bytes in %d arguments, at most %d", n, len(args), maxCmdBytes)
	}
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			if i == 0 {
				return nil, status.Errorf(codes.InvalidArgument, "invalid job: command %q contains a NUL byte", a)
			}
			return nil, status.Errorf(codes.InvalidArgument, "invalid job: argument %d contains a NUL byte", i)
		}
	}
	sp := &jobSpec{args: args, remove: req.GetRemove()}
	var err error
	if sp.limits, err = cfg.grant(req.GetLimits()); err != nil {
		return nil, err
	}
	if sp.env, err = checkEnv(req.GetEnv()); err != nil {
		return nil, err
	}
	if sp.dir, err = checkDir(req.GetDir()); err != nil {
		return nil, err
	}
	sp.grace = cfg.GracePeriod
	if g := req.GetGracePeriod(); g != nil {
		d := g.AsDuration()
		if d < 0 || !g.IsValid() {
			return nil, status.Errorf(codes.InvalidArgument, "grace_period %v is negative", d)
		}
		if d > 0 {
			sp.grace = d
		}
	}
	if sp.grace == 0 {
		sp.grace = tjob.DefaultGracePeriod
	}
	return sp, nil
}

// nulBytes is the size of strings as the kernel counts them, each with its
// terminating NUL.
func nulBytes(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s) + 1
	}
	return n
}

// grant is what the job gets of each limit: the request's, or the default,
// never above the cap.
func (cfg *Config) grant(req *tjobv1.Limits) (limits, error) {
	type limit struct {
		field         string
		asked         int64
		def, cap      int64
		flag, capFlag string
	}
	ls := []limit{
		{"limits.cpu_percent", int64(req.GetCpuPercent()), int64(cfg.CPUPercent), int64(cfg.Caps.CPUPercent), "-cpu-percent", "-max-cpu-percent"},
		{"limits.memory_mb", req.GetMemoryMb(), int64(cfg.MemoryMB), int64(cfg.Caps.MemoryMB), "-memory-mb", "-max-memory-mb"},
		{"limits.read_bps", req.GetReadBps(), int64(cfg.ReadBPS), int64(cfg.Caps.ReadBPS), "-read-bps", "-max-read-bps"},
		{"limits.write_bps", req.GetWriteBps(), int64(cfg.WriteBPS), int64(cfg.Caps.WriteBPS), "-write-bps", "-max-write-bps"},
		{"limits.pids_max", int64(req.GetPidsMax()), int64(cfg.PidsMax), int64(cfg.Caps.PidsMax), "-pids-max", "-max-pids"},
	}
	got := make([]int64, len(ls))
	for i, l := range ls {
		switch {
		case l.asked < 0:
			return limits{}, status.Errorf(codes.InvalidArgument, "%s %d is negative", l.field, l.asked)
		case l.asked == 0:
			got[i] = l.def
		case l.cap > 0 && l.asked > l.cap:
			return limits{}, status.Errorf(codes.InvalidArgument, "%s %d is above the server's cap of %d (%s)", l.field, l.asked, l.cap, l.capFlag)
		default:
			got[i] = l.asked
		}
	}
	return limits{CPUPercent: int(got[0]), MemoryMB: got[1], ReadBPS: got[2], WriteBPS: got[3], PidsMax: int(got[4])}, nil
}

// checkEnv checks the request's environment: KEY=value each, KEY a name.
func checkEnv(env []string) ([]string, error) {
	if n := nulBytes(env); n > maxCmdBytes {
		return nil, status.Errorf(codes.InvalidArgument, "env too long: %d bytes in %d entries, at most %d", n, len(env), maxCmdBytes)
	}
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, "\x00") || strings.IndexByte(kv, 0) >= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "env[%d] %q is not KEY=value", i, clipText(kv))
		}
	}
	return env, nil
}

// checkDir makes the request's dir a path in the workspace, as the job sees
// it; one that leaves the workspace is refused. (The workspace is new and
// empty when the job starts: nothing in it can be a symbolic link yet.)
func checkDir(dir string) (string, error) {
	if dir == "" {
		return workspaceDir, nil
	}
	clean := path.Clean(dir)
	if path.IsAbs(dir) || clean == ".." || strings.HasPrefix(clean, "../") || strings.IndexByte(dir, 0) >= 0 {
		return "", status.Errorf(codes.InvalidArgument, "dir %q leaves the job's workspace: give a relative path inside it", clipText(dir))
	}
	return path.Join(workspaceDir, clean), nil
}

// clip shortens what a client sent for an error message.
func clipText(s string) string {
	if len(s) <= maxIDShown {
		return s
	}
	return strings.ToValidUTF8(s[:maxIDShown], "") + "…"
}

// apply sets sp on j.
func (sp *jobSpec) apply(j *tjob.Job) {
	j.CPUPercent = sp.limits.CPUPercent
	j.MemoryMB = int(sp.limits.MemoryMB)
	j.ReadBPS = int(sp.limits.ReadBPS)
	j.WriteBPS = int(sp.limits.WriteBPS)
	j.PidsMax = sp.limits.PidsMax
	j.GracePeriod = sp.grace
	j.Dir = sp.dir
	j.Env = append(append([]string(nil), baseEnv...), sp.env...)
}
