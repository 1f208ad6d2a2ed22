//go:build linux

package tjob

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Which block devices ReadBPS and WriteBPS throttle. The kernel throttles per
// device, and only whole disks: a partition's I/O is counted on its disk, and
// io.max refuses partitions. So a path is turned into the disk behind it:
// stat the path, follow /sys/dev/block/MAJ:MIN, and take the parent disk
// when that entry is a partition (it has a "partition" file). File systems
// with no block device (tmpfs, overlay, proc: major 0) are skipped, except
// that a major-0 mount whose source is a block device (btrfs) uses that
// device.

// devNum is a block device number.
type devNum struct{ major, minor uint32 }

func (d devNum) String() string { return fmt.Sprintf("%d:%d", d.major, d.minor) }

// ioDevices returns the disks whose bandwidth the job's ReadBPS and WriteBPS
// limit: the explicit ones (Job.IODevices), or those behind paths.
func ioDevices(explicit, paths []string) ([]devNum, error) {
	var devs []devNum
	add := func(d devNum) {
		for _, e := range devs {
			if e == d {
				return
			}
		}
		devs = append(devs, d)
	}
	if len(explicit) > 0 {
		for _, s := range explicit {
			d, err := parseIODevice(s)
			if err != nil {
				return nil, err
			}
			disk, err := wholeDisk(d)
			if err != nil {
				return nil, fmt.Errorf("tjob: IODevices %q: %w", s, err)
			}
			add(disk)
		}
		return devs, nil
	}
	var skipped []string
	for _, p := range paths {
		d, ok, err := deviceOfPath(p)
		if err != nil {
			return nil, err
		}
		if !ok {
			skipped = append(skipped, p)
			continue
		}
		disk, err := wholeDisk(d)
		if err != nil {
			return nil, fmt.Errorf("tjob: block device of %s: %w", p, err)
		}
		add(disk)
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("tjob: ReadBPS/WriteBPS: no block device behind %s (tmpfs, overlay or network file systems cannot be throttled); set IODevices", strings.Join(skipped, " or "))
	}
	return devs, nil
}

// ioPaths are the paths on whose disks the job reads and writes: its
// directory (the caller's when empty), the root file system, and TmpDir.
// Dir is the job's own view: inside a read-only jail with a TmpDir, a Dir
// under /tmp is in TmpDir, so it is looked up there.
func (j *Job) ioPaths() []string {
	paths := []string{"/"}
	if dir := j.hostDir(); dir != "" {
		paths = append(paths, dir)
	}
	if j.TmpDir != "" {
		paths = append(paths, j.TmpDir)
	}
	return paths
}

// hostDir is where the job's Dir is on the host, or "" where it has none:
// Dir is the private /tmp held in memory.
func (j *Job) hostDir() string {
	if j.Dir == "" {
		dir, _ := os.Getwd()
		return dir
	}
	dir := filepath.Clean(j.Dir)
	if j.NoJail || !j.ReadOnlyRoot {
		return dir
	}
	if j.TmpDir == "" {
		if dir == "/tmp" {
			return ""
		}
		return dir
	}
	if rel, err := filepath.Rel("/tmp", dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return filepath.Join(j.TmpDir, rel)
	}
	return dir
}

// parseIODevice reads an IODevices entry: a device file or "MAJOR:MINOR".
func parseIODevice(s string) (devNum, error) {
	if strings.HasPrefix(s, "/") {
		var st unix.Stat_t
		if err := unix.Stat(s, &st); err != nil {
			return devNum{}, &ConfigError{Field: "IODevices", Reason: fmt.Sprintf("%q: %v", s, err), Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return devNum{}, invalid("IODevices", "%q is not a block device", s)
		}
		return devNum{unix.Major(st.Rdev), unix.Minor(st.Rdev)}, nil
	}
	d, ok := parseMajMin(s)
	if !ok {
		return devNum{}, invalid("IODevices", "%q: want a device file such as /dev/sda or MAJOR:MINOR", s)
	}
	return d, nil
}

func parseMajMin(s string) (devNum, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return devNum{}, false
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return devNum{}, false
	}
	return devNum{uint32(maj), uint32(min)}, true
}

// deviceOfPath returns the device of the file system holding p; false when
// it has none.
func deviceOfPath(p string) (devNum, bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return devNum{}, false, fmt.Errorf("tjob: ReadBPS/WriteBPS: %w", &os.PathError{Op: "stat", Path: p, Err: err})
	}
	d := devNum{unix.Major(st.Dev), unix.Minor(st.Dev)}
	if d.major != 0 {
		return d, true, nil
	}
	// An anonymous device: tmpfs, overlay, proc, ... or btrfs, whose
	// mount source is the block device.
	mounts, err := readMountinfo()
	if err != nil {
		return devNum{}, false, err
	}
	for _, m := range mounts {
		if m.dev != d.String() || !strings.HasPrefix(m.source, "/dev/") {
			continue
		}
		var sst unix.Stat_t
		if unix.Stat(m.source, &sst) == nil && sst.Mode&unix.S_IFMT == unix.S_IFBLK {
			return devNum{unix.Major(sst.Rdev), unix.Minor(sst.Rdev)}, true, nil
		}
	}
	return devNum{}, false, nil
}

// wholeDisk returns the disk of a partition, or d itself when it is a disk
// (or a device-mapper or md device, which the kernel throttles as is).
func wholeDisk(d devNum) (devNum, error) {
	sys := "/sys/dev/block/" + d.String()
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return devNum{}, fmt.Errorf("no block device %s (%s does not exist)", d, sys)
		}
		return devNum{}, err
	}
	if _, err := os.Stat(filepath.Join(real, "partition")); err != nil {
		return d, nil
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
	if err != nil {
		return devNum{}, fmt.Errorf("parent disk of partition %s: %w", d, err)
	}
	disk, ok := parseMajMin(string(b))
	if !ok {
		return devNum{}, fmt.Errorf("parent disk of partition %s: bad dev file %q", d, b)
	}
	return disk, nil
}
