// Package selftest is the VM harness's own sanity test (see test/vm/README.md).
//
// It shows how a test detects the cgroup v2 VM: test/vm/run.sh boots the
// guest with TJOB_REQUIRE_CGROUP=v2, and then a missing cgroup v2 (or root)
// is a failure instead of a skip. On a host without cgroup v2, or not as
// root, the tests skip with the reason.
//
// Inside the VM it proves the guest is fit for tjob's tests: the root cgroup
// offers cpu, memory, io and pids, and io.max on the disk behind
// TJOB_TEST_BLOCKDIR really throttles a process started straight into a
// cgroup (clone3 CLONE_INTO_CGROUP through SysProcAttr.UseCgroupFD).
//
// VMTEST_SELFCHECK_BREAK=1 sets a limit too large to throttle anything, so
// the write is fast and the test fails: run.sh must then exit non-zero.
package selftest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	cgroupRoot    = "/sys/fs/cgroup"
	cgroup2Magic  = 0x63677270 // CGROUP2_SUPER_MAGIC
	writeSize     = 4 << 20    // bytes written with O_DIRECT
	limitBps      = 2 << 20    // io.max wbps: 4 MiB at 2 MiB/s takes ~2 s
	minThrottled  = 1500 * time.Millisecond
	helperEnv     = "TJOB_SELFTEST_HELPER_FILE"
	breakLimitEnv = "VMTEST_SELFCHECK_BREAK"
)

// requireV2 skips the test, or fails it when TJOB_REQUIRE_CGROUP=v2.
func requireV2(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("TJOB_REQUIRE_CGROUP") == "v2" {
		t.Fatalf("TJOB_REQUIRE_CGROUP=v2 but %s", msg)
	}
	t.Skipf("skipping: %s (run `make vmtest` for a cgroup v2 VM)", msg)
}

// cgroupV2 checks for root and a cgroup v2 mount at /sys/fs/cgroup.
func cgroupV2(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		requireV2(t, "not running as root")
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(cgroupRoot, &fs); err != nil {
		requireV2(t, "statfs %s: %v", cgroupRoot, err)
	}
	if fs.Type != cgroup2Magic {
		requireV2(t, "%s is not cgroup2fs (hybrid or v1 host)", cgroupRoot)
	}
}

func TestRootControllers(t *testing.T) {
	cgroupV2(t)
	for _, file := range []string{"cgroup.controllers", "cgroup.subtree_control"} {
		b, err := os.ReadFile(filepath.Join(cgroupRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		have := strings.Fields(string(b))
		t.Logf("%s: %s", file, strings.Join(have, " "))
		for _, c := range []string{"cpu", "memory", "io", "pids"} {
			if !slices.Contains(have, c) {
				t.Errorf("%s lacks %q", file, c)
			}
		}
	}
}

// blockDevice returns "MAJ:MIN" of the whole disk holding dir.
func blockDevice(t *testing.T, dir string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	major := (st.Dev>>8)&0xfff | (st.Dev>>32)&^0xfff
	minor := st.Dev&0xff | (st.Dev>>12)&^0xff
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)
	if _, err := os.Stat(sys); err != nil {
		requireV2(t, "%s is not on a block device (%v)", dir, err)
	}
	if _, err := os.Stat(sys + "/partition"); err == nil {
		sys += "/.." // io.max wants the whole disk
	}
	b, err := os.ReadFile(sys + "/dev")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestIOMaxThrottlesDirectWrite(t *testing.T) {
	cgroupV2(t)
	dir := os.Getenv("TJOB_TEST_BLOCKDIR")
	if dir == "" {
		requireV2(t, "TJOB_TEST_BLOCKDIR is not set")
	}
	dev := blockDevice(t, dir)

	cg := filepath.Join(cgroupRoot, fmt.Sprintf("selftest-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cg) })

	bps := limitBps
	if os.Getenv(breakLimitEnv) == "1" {
		bps = 1 << 40 // 1 TiB/s: no throttling, so this test must fail
		t.Logf("%s=1: deliberately using a useless limit", breakLimitEnv)
	}
	limit := fmt.Sprintf("%s wbps=%d", dev, bps)
	if err := os.WriteFile(filepath.Join(cg, "io.max"), []byte(limit), 0); err != nil {
		t.Fatalf("io.max %q: %v", limit, err)
	}
	t.Logf("io.max: %s (disk of %s)", limit, dir)

	fd, err := syscall.Open(cg, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)

	// Run this test binary again as the writer, born inside the cgroup.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDirectWrite$")
	cmd.Env = append(os.Environ(), helperEnv+"="+filepath.Join(dir, "selftest.dat"))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("writer: %v\n%s", err, out)
	}
	var took time.Duration
	for _, line := range strings.Split(string(out), "\n") {
		if ns, ok := strings.CutPrefix(line, "write-ns="); ok {
			n, _ := strconv.ParseInt(ns, 10, 64)
			took = time.Duration(n)
		}
	}
	if took == 0 {
		t.Fatalf("writer printed no timing:\n%s", out)
	}
	t.Logf("%d MiB O_DIRECT write took %v", writeSize>>20, took)
	if took < minThrottled {
		t.Errorf("write took %v, want >= %v: io.max is not enforced", took, minThrottled)
	}
}

// TestHelperDirectWrite is the writer process of the test above; it does
// nothing unless started by it.
func TestHelperDirectWrite(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	// An anonymous mapping is page aligned, as O_DIRECT needs.
	buf, err := syscall.Mmap(-1, 0, writeSize, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = byte(i)
	}
	fd, err := syscall.Open(path, syscall.O_CREAT|syscall.O_TRUNC|syscall.O_WRONLY|syscall.O_DIRECT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	start := time.Now()
	for off := 0; off < len(buf); {
		n, err := syscall.Write(fd, buf[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := syscall.Fsync(fd); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	syscall.Close(fd)
	fmt.Printf("write-ns=%d\n", took.Nanoseconds())
}
