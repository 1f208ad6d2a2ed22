package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// On cgroup v1, the jail's init is moved into the job's cgroups by a write
// to cgroup.procs, which takes the kernel's cgroup_threadgroup_rwsem for
// writing. That per-CPU rwsem can make its writer wait for an RCU grace
// period unless another writer came moments before: milliseconds on some
// kernels and machines, for every job started on its own. The cgroup2
// mount option favordynmods (Linux 6.0) keeps the rwsem in the mode where
// writers do not wait, at some cost to forks and exits. The rwsem is
// global, so the option on a hybrid host's cgroup2 mount speeds up v1
// moves too. On cgroup v2 the init is born in its cgroup
// (CLONE_INTO_CGROUP) and nothing is moved.

// v1Host reports whether jobs get cgroup v1 hierarchies here.
func v1Host() bool {
	mode := cgroupMode()
	return strings.HasPrefix(mode, "hybrid") || strings.HasPrefix(mode, "v1")
}

// favordynmodsMount is the host's cgroup2 mount, and whether it has
// favordynmods already.
func favordynmodsMount() (m mount, already bool, err error) {
	ms, err := mounts()
	if err != nil {
		return m, false, err
	}
	for _, m := range ms {
		if m.fstype == "cgroup2" {
			return m, slices.Contains(m.options, "favordynmods"), nil
		}
	}
	return m, false, errors.New("no cgroup2 file system is mounted to set favordynmods on")
}

// mountFlags turns a mount's own options back into mount(2) flags, which a
// remount sets anew.
func mountFlags(opts []string) uintptr {
	named := map[string]uintptr{"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
		"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME}
	var f uintptr
	for _, o := range opts {
		f |= named[o]
	}
	return f
}

// remountCgroup2 remounts m with its own options and the file system
// options opts (rw and ro aside, which the flags carry).
func remountCgroup2(m mount, opts []string) error {
	opts = slices.DeleteFunc(slices.Clone(opts), func(o string) bool { return o == "rw" || o == "ro" })
	if err := unix.Mount("", m.point, "", unix.MS_REMOUNT|mountFlags(m.flags), strings.Join(opts, ",")); err != nil {
		return fmt.Errorf("remounting %s with %q: %w", m.point, strings.Join(opts, ","), err)
	}
	return nil
}

// withFavordynmods runs f with the host's cgroup2 mount remounted with
// favordynmods, then puts its options back as they were.
func withFavordynmods(m mount, f func()) (err error) {
	if err := remountCgroup2(m, append(slices.Clone(m.options), "favordynmods")); err != nil {
		return err
	}
	defer func() {
		if rerr := remountCgroup2(m, m.options); rerr != nil {
			err = fmt.Errorf("**could not put the host's cgroup2 mount back as it was (favordynmods is still set)**: %w", rerr)
		}
	}()
	f()
	return nil
}

// favordynmodsRows measures the job's start as tjobs runs it again, as the
// host is mounted and then with favordynmods: what the RCU grace period of
// a cgroup v1 move costs a start, and whether the host setting removes it.
func favordynmodsRows(ctx context.Context, e *env, s *section, vs *startVariants) {
	if !v1Host() {
		return // v2: nothing is moved
	}
	m, already, err := favordynmodsMount()
	switch {
	case err != nil:
		s.note("cgroup v1 grace period: not measured: %v.", err)
		return
	case already:
		s.note("cgroup v1 grace period: the host's cgroup2 mount (%s) has favordynmods already, so the starts above do not wait for an RCU grace period.", m.point)
		return
	}
	asMounted := &variant{name: "tjob job as tjobs runs it, again, the host as mounted (cgroup v1: the init's move may wait for an RCU grace period)", run: vs.job.run}
	fav := &variant{name: fmt.Sprintf("tjob job as tjobs runs it, with the host's cgroup2 mount (%s) remounted `favordynmods` for these runs", m.point), run: vs.job.run}
	// In turns, each start 100 ms after anything else moved a process:
	// a writer that comes within a grace period of the last one does not
	// wait, and taking favordynmods off ends its effect only a grace
	// period later.
	deadline := time.Now().Add(40 * time.Second)
	for i := 0; i < e.runs(40, 10) && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		time.Sleep(100 * time.Millisecond)
		asMounted.once()
		err := withFavordynmods(m, func() {
			time.Sleep(100 * time.Millisecond)
			fav.once()
		})
		if err != nil {
			s.note("cgroup v1 grace period: %v.", err)
			break
		}
	}
	for _, v := range []*variant{asMounted, fav} {
		if v.failed != nil {
			s.note("%s failed during the runs: %v", v.name, v.failed)
		}
		if !v.measured() {
			continue
		}
		r := &row{what: v.name, unit: "ms"}
		if v == fav && asMounted.measured() {
			r.anchor, r.ratio = "the host as mounted", ratioX(fav.median()/asMounted.median())
		}
		s.add(fromStats(r, summarize(v.xs), "p10–p90"))
	}
	if !fav.measured() {
		return
	}
	anchors := ""
	if vs.unshare.measured() {
		anchors += fmt.Sprintf(", %s of unshare (target ≤ 2×)", ratioX(fav.median()/vs.unshare.median()))
	}
	if vs.bwrap.measured() {
		anchors += fmt.Sprintf(", %s of bwrap (target: faster)", ratioX(fav.median()/vs.bwrap.median()))
	}
	s.note("With `favordynmods` the job starts in %.2f ms%s. The option is a host setting (`mount -o remount,favordynmods` on the cgroup2 mount, "+
		"or in its fstab entry) that makes forks and exits pay a little for every process on the host; tjob does not set it. "+
		"The mount was put back as it was after these runs.", fav.median(), anchors)
}

// unfavorMain: tjobbench unfavor. Takes favordynmods off the host's cgroup2
// mount, for bench/run.sh to call when the harness was killed before it
// could put the mount back.
func unfavorMain() int {
	m, set, err := favordynmodsMount()
	if err == nil && set {
		err = remountCgroup2(m, slices.DeleteFunc(slices.Clone(m.options), func(o string) bool { return o == "favordynmods" }))
	}
	return exitCode("unfavor", err)
}
