package tjob

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The jail's view of the file system: the host's, seen through a private
// mount namespace, with the kernel's interfaces a job has no business
// writing to made read-only or hidden, a /dev with only the harmless
// devices, and the masked paths covered. With ReadOnly, the host's files are
// read-only too, but for the job's directory and a private /tmp.

// setupMounts runs in the shim, in its new mount namespace, before the
// command starts.
func setupMounts(cfg *shimConfig) error {
	// Nothing mounted here may reach the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("jail: making mounts private: %w", err)
	}
	for _, p := range cfg.MaskPaths {
		if err := mask(p); err != nil {
			return err
		}
	}
	if cfg.ReadOnly {
		if err := readOnlyRoot(cfg.Dir); err != nil {
			return err
		}
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("jail: mounting /proc: %w", err)
	}
	if err := protectProc(); err != nil {
		return err
	}
	// A sysfs of the new network namespace, so /sys/class/net shows only
	// loopback; it also hides the host's cgroup file systems.
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("jail: mounting /sys: %w", err)
	}
	if err := minimalDev(); err != nil {
		return err
	}
	return nil
}

// readOnlyRoot makes every mount read-only, mounts a private /tmp, then
// binds dir writable at its place again (inside the new /tmp, if that is
// where it was).
func readOnlyRoot(dir string) error {
	dirFD := -1
	if dir != "" {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "chdir", Path: dir, Err: err}
		}
		defer unix.Close(fd)
		dirFD = fd
	}
	ro := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(-1, "/", unix.AT_RECURSIVE, ro); err != nil {
		return fmt.Errorf("jail: making / read-only: %w", err)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("jail: mounting /tmp: %w", err)
	}
	if dirFD < 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("jail: keeping %s writable: %w", dir, err)
	}
	src := fmt.Sprintf("/proc/self/fd/%d", dirFD)
	if err := unix.Mount(src, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("jail: keeping %s writable: %w", dir, err)
	}
	rw := &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(-1, dir, 0, rw); err != nil {
		return fmt.Errorf("jail: keeping %s writable: %w", dir, err)
	}
	return nil
}

// protectProc makes the parts of /proc that reach the whole kernel
// read-only (sysctls, sysrq, ...) and hides the ones that leak its memory
// or keys, as Docker does. A root job could otherwise, say, set
// kernel.core_pattern: a program the kernel runs as root outside every
// namespace.
func protectProc() error {
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"} {
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
		return fmt.Errorf("jail: making %s read-only: %w", path, err)
	}
	return nil
}

// devices are the nodes a job gets in its /dev, with their numbers: none of
// them reaches a disk or the kernel's memory.
var devices = []struct {
	name         string
	major, minor uint32
}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

// minimalDev replaces /dev with a small tmpfs holding only the harmless
// devices, so that a root job cannot open the disk under a masked file.
func minimalDev() error {
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("jail: mounting /dev: %w", err)
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, d := range devices {
		dev := int(unix.Mkdev(d.major, d.minor))
		if err := unix.Mknod(filepath.Join("/dev", d.name), unix.S_IFCHR|0o666, dev); err != nil {
			return fmt.Errorf("jail: /dev/%s: %w", d.name, err)
		}
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join("/dev", name)); err != nil {
			return fmt.Errorf("jail: /dev: %w", err)
		}
	}
	if err := os.Mkdir("/dev/shm", 0o1777); err != nil {
		return fmt.Errorf("jail: /dev/shm: %w", err)
	}
	if err := unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777"); err != nil {
		return fmt.Errorf("jail: /dev/shm: %w", err)
	}
	return nil
}

// mask covers path with an empty read-only mount: a tmpfs on a directory,
// /dev/null on a file. A path that does not exist needs no mask.
func mask(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("jail: masking %s: %w", path, err)
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
		return fmt.Errorf("jail: masking %s: %w", path, err)
	}
	return nil
}
