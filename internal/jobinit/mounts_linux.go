package jobinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The jail's view of the file system: the host's, seen through a private
// mount namespace, with the kernel's interfaces a job has no business
// writing to made read-only or hidden, a /dev with only the harmless
// devices, and the masked paths covered. With ReadOnly, the host's files are
// read-only too, but for the job's directory and a private /tmp.
//
// Every step works in a user namespace too: nothing here makes a device
// node (the kernel refuses that there); the devices are bind mounts of the
// host's.

// pathErr is a failed operation on a path, as the library reports it.
func pathErr(op, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// setupMounts runs in the init, in its new mount namespace, before the
// command starts.
func setupMounts(cfg *Config) error {
	// Nothing mounted here may reach the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return pathErr("make mounts private", "/", err)
	}
	// The host's device nodes, opened before /dev is replaced.
	devs, err := openDevices()
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range devs {
			f.Close()
		}
	}()
	for _, p := range cfg.MaskPaths {
		if err := mask(p); err != nil {
			return err
		}
	}
	if cfg.ReadOnly {
		if err := readOnlyRoot(cfg.Dir, cfg.Tmp); err != nil {
			return err
		}
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return pathErr("mount", "/proc", err)
	}
	if err := protectProc(); err != nil {
		return err
	}
	// A sysfs of the new network namespace, so /sys/class/net shows only
	// loopback; it also hides the host's cgroup file systems.
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return pathErr("mount", "/sys", err)
	}
	return minimalDev(devs)
}

// readOnlyRoot makes every mount read-only and mounts a private /tmp: the
// library's tree at TmpFD (a workspace on disk) when tmp, else an empty
// tmpfs. Dir stays writable: it is the private /tmp or, with tmp, inside
// it; or else a host directory, bound writable at its place again (inside
// the new /tmp, if that is where it was).
func readOnlyRoot(dir string, tmp bool) error {
	dirFD := -1
	if dir != "" && filepath.Clean(dir) != "/tmp" && !(tmp && inTmp(dir)) {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return pathErr("chdir", dir, err)
		}
		defer unix.Close(fd)
		dirFD = fd
	}
	ro := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(-1, "/", unix.AT_RECURSIVE, ro); err != nil {
		return pathErr("make read-only", "/", err)
	}
	if err := privateTmp(tmp); err != nil {
		return err
	}
	if dirFD < 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return pathErr("keep writable", dir, err)
	}
	// The fd was opened before /tmp was covered, so it names the host's
	// directory wherever it is.
	src := fmt.Sprintf("/proc/self/fd/%d", dirFD)
	if err := unix.Mount(src, dir, "", unix.MS_BIND, ""); err != nil {
		return pathErr("keep writable", dir, err)
	}
	rw := &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(-1, dir, 0, rw); err != nil {
		return pathErr("keep writable", dir, err)
	}
	return nil
}

// inTmp reports whether path is /tmp or below it.
func inTmp(path string) bool {
	p := filepath.Clean(path)
	return p == "/tmp" || strings.HasPrefix(p, "/tmp/")
}

// privateTmp mounts the job's /tmp: the tree the library detached for it,
// or an empty tmpfs.
func privateTmp(tree bool) error {
	if !tree {
		if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
			return pathErr("mount", "/tmp", err)
		}
		return nil
	}
	defer unix.Close(TmpFD)
	if err := unix.MoveMount(TmpFD, "", unix.AT_FDCWD, "/tmp", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return pathErr("mount the workspace on", "/tmp", err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Attr_clr: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(-1, "/tmp", 0, attr); err != nil {
		return pathErr("mount the workspace on", "/tmp", err)
	}
	return nil
}

// protectProc makes the parts of /proc that reach the whole kernel
// read-only (sysctls, sysrq, ...) and hides the ones that leak its memory
// or keys, as Docker does. A root job could otherwise, say, set
// kernel.core_pattern: a program the kernel runs as root outside every
// namespace. The init's own OOM score is read-only too: a job that raised
// it would make the kernel kill the init, not the job, when memory runs
// out.
func protectProc() error {
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs",
		"/proc/1/oom_score_adj", "/proc/1/oom_adj"} {
		if err := bindReadOnly(p); err != nil {
			return err
		}
	}
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi", "/proc/scsi"} {
		if err := mask(p); err != nil {
			return err
		}
	}
	return nil
}

// bindReadOnly makes path a read-only view of itself; a path that does not
// exist is left alone.
func bindReadOnly(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := unix.Mount(path, path, "", unix.MS_BIND|unix.MS_REC, "")
	if err == nil {
		err = unix.Mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	if err != nil {
		return pathErr("make read-only", path, err)
	}
	return nil
}

// devices are the nodes a job gets in its /dev: none of them reaches a disk
// or the kernel's memory.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// openDevices opens the host's nodes of devices, by path only.
func openDevices() (map[string]*os.File, error) {
	devs := map[string]*os.File{}
	for _, d := range devices {
		fd, err := unix.Open("/dev/"+d, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, f := range devs {
				f.Close()
			}
			return nil, pathErr("open", "/dev/"+d, err)
		}
		devs[d] = os.NewFile(uintptr(fd), "/dev/"+d)
	}
	return devs, nil
}

// minimalDev replaces /dev with a small tmpfs holding only the harmless
// devices, bound from the host's nodes, so that a root job cannot open the
// disk under a masked file.
func minimalDev(devs map[string]*os.File) error {
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return pathErr("mount", "/dev", err)
	}
	for _, d := range devices {
		target := filepath.Join("/dev", d)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return pathErr("create", target, err)
		}
		src := fmt.Sprintf("/proc/self/fd/%d", devs[d].Fd())
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return pathErr("mount", target, err)
		}
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join("/dev", name)); err != nil {
			return pathErr("symlink", filepath.Join("/dev", name), err)
		}
	}
	if err := os.Mkdir("/dev/shm", 0o1777); err != nil {
		return pathErr("mkdir", "/dev/shm", err)
	}
	if err := unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777"); err != nil {
		return pathErr("mount", "/dev/shm", err)
	}
	return nil
}

// mask covers path with an empty read-only mount: a tmpfs on a directory,
// /dev/null on a file. A path that does not exist needs no mask, nor one
// the init cannot reach: in a user namespace the host's root-only
// directories are closed to it, and so to the job, which has no more
// rights there than the init.
func mask(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
		return nil
	}
	if err != nil {
		return pathErr("mask", path, err)
	}
	const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if fi.IsDir() {
		err = unix.Mount("tmpfs", path, "tmpfs", flags, "size=4k,nr_inodes=1,mode=000")
	} else {
		err = unix.Mount("/dev/null", path, "", unix.MS_BIND, "")
		if err == nil {
			err = unix.Mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|flags, "")
		}
	}
	if err != nil {
		return pathErr("mask", path, err)
	}
	return nil
}
