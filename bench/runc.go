package main

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// runcVariant makes a runc bundle that runs /bin/true from a static busybox
// with the RFD's limits, and returns a function that runs it once; or why
// runc cannot be measured here.
func (e *env) runcVariant() (run func() (time.Duration, error), skip string) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return nil, "runc missing (Debian runc)"
	}
	if !e.root {
		return nil, "needs root"
	}
	busybox, err := staticBusybox()
	if err != nil {
		return nil, err.Error()
	}
	bundle := filepath.Join(e.work, "runc-bundle")
	state := filepath.Join(e.work, "runc-state")
	if err := makeRootfs(filepath.Join(bundle, "rootfs"), busybox); err != nil {
		return nil, err.Error()
	}
	if err := writeRuncConfig(runc, bundle); err != nil {
		return nil, err.Error()
	}
	i := 0
	return func() (time.Duration, error) {
		i++
		id := fmt.Sprintf("tjobbench-%d-%d", os.Getpid(), i)
		d, err := timed(exec.Command(runc, "--root", state, "run", "--bundle", bundle, id))
		if err != nil {
			exec.Command(runc, "--root", state, "delete", "-f", id).Run()
		}
		return d, err
	}, ""
}

// staticBusybox finds busybox, linked statically: a rootfs has no libc.
func staticBusybox() (string, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", errors.New("busybox missing (Debian busybox-static)")
	}
	f, err := elf.Open(bb)
	if err != nil {
		return "", fmt.Errorf("busybox: %w", err)
	}
	defer f.Close()
	if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		return "", fmt.Errorf("%s is linked dynamically: a rootfs needs busybox-static", bb)
	}
	return bb, nil
}

// makeRootfs makes a root file system of busybox and its true, sh and sleep.
func makeRootfs(rootfs, busybox string) error {
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, l := range []string{"true", "sh", "sleep"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", l))
	}
	return nil
}

// writeRuncConfig writes the bundle's config.json: runc's default spec,
// running /bin/true on a read-only root with the RFD's limits.
func writeRuncConfig(runc, bundle string) error {
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %v: %s", err, out)
	}
	file := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("runc spec: %w", err)
	}
	proc, _ := cfg["process"].(map[string]any)
	linux, _ := cfg["linux"].(map[string]any)
	if proc == nil || linux == nil {
		return errors.New("runc spec: no process or linux section")
	}
	proc["terminal"] = false
	proc["args"] = []string{"/bin/true"}
	if root, ok := cfg["root"].(map[string]any); ok {
		root["readonly"] = true
	}
	linux["resources"] = runcResources()
	// A cgroup of a fixed name at the hierarchies' roots: the runs are
	// sequential, and runc removes it after each.
	linux["cgroupsPath"] = "/tjobbench-runc"
	raw, err = json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, raw, 0o644)
}

// runcResources are the RFD's limits in the runtime spec's terms.
func runcResources() map[string]any {
	mem := map[string]any{"limit": limMemoryMB << 20}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		mem["swap"] = limMemoryMB << 20
	}
	res := map[string]any{
		"memory": mem,
		"cpu":    map[string]any{"quota": limCPUPercent * 1000, "period": 100000},
		"pids":   map[string]any{"limit": limPids},
	}
	if maj, mnr, err := rootDisk(); err == nil {
		dev := []map[string]any{{"major": maj, "minor": mnr, "rate": limBPS}}
		res["blockIO"] = map[string]any{"throttleReadBpsDevice": dev, "throttleWriteBpsDevice": dev}
	}
	return res
}

// rootDisk is the whole disk behind /, for blkio throttling.
func rootDisk() (major, minor int, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/", &st); err != nil {
		return 0, 0, err
	}
	major = int((st.Dev >> 8) & 0xfff)
	minor = int((st.Dev & 0xff) | ((st.Dev >> 12) & 0xfff00))
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)
	if _, err := os.Stat(sys); err != nil {
		return 0, 0, errors.New("/ is not on a block device")
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		if b, err := os.ReadFile(filepath.Join(sys, "..", "dev")); err == nil {
			if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
				return 0, 0, err
			}
		}
	}
	return major, minor, nil
}
