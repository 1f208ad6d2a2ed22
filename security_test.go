package tjob

// Security of the jail against a job that attacks it (issue 9): ways around
// MaskPaths and out of the namespaces that a root job would have if it kept
// CAP_MKNOD or saw the host's /dev and a writable /proc/sys.
// Each case logs one "RELIABILITY: <case>: <result>" line for
// docs/RELIABILITY.md.

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/neildo/tjob/internal/testkit"
	"golang.org/x/sys/unix"
)

// securityReport logs a case's result line for docs/RELIABILITY.md.
var securityReport = testkit.Report

// physicalOffset is where on its block device the first byte of file lies
// (FS_IOC_FIEMAP, synced first).
func physicalOffset(file string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	const (
		fsIocFiemap    = 0xC020660B // _IOWR('f', 11, struct fiemap)
		fiemapFlagSync = 1
		headerSize     = 32
		extentSize     = 56
	)
	buf := make([]byte, headerSize+extentSize)
	binary.NativeEndian.PutUint64(buf[0:], 0)               // fm_start
	binary.NativeEndian.PutUint64(buf[8:], ^uint64(0))      // fm_length
	binary.NativeEndian.PutUint32(buf[16:], fiemapFlagSync) // fm_flags
	binary.NativeEndian.PutUint32(buf[24:], 1)              // fm_extent_count
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return 0, fmt.Errorf("FIEMAP %s: %w", file, errno)
	}
	if binary.NativeEndian.Uint32(buf[20:]) == 0 { // fm_mapped_extents
		return 0, fmt.Errorf("FIEMAP %s: no extent", file)
	}
	return int64(binary.NativeEndian.Uint64(buf[headerSize+8:])), nil // fe_physical
}

// blockDevice is the device node of the block device under dir, and its
// numbers.
func blockDevice(dir string) (node string, major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", 0, 0, err
	}
	major, minor = unix.Major(st.Dev), unix.Minor(st.Dev)
	uevent, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err != nil {
		return "", major, minor, fmt.Errorf("%s is not on a block device: %w", dir, err)
	}
	for _, l := range strings.Split(string(uevent), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			return "/dev/" + name, major, minor, nil
		}
	}
	return "", major, minor, fmt.Errorf("no DEVNAME for %d:%d", major, minor)
}

// TestSecurityMaskedFileOnRawDevice: a masked file is hidden at its path,
// and a root job keeps CAP_DAC_OVERRIDE: were the host's block devices in
// its /dev, or could it make a device node (CAP_MKNOD), reading the device
// under the file would give its contents. That is how a job would read the
// server's or the CA's key on a host whose certificate directory lies on a
// disk. (Found by this test in the VM; the jail now has a minimal /dev and
// no CAP_MKNOD.)
func TestSecurityMaskedFileOnRawDevice(t *testing.T) {
	requireRoot(t)
	base := os.Getenv("TJOB_TEST_BLOCKDIR") // the test VM's disk
	if base == "" {
		base = t.TempDir()
	}
	secretDir, err := os.MkdirTemp(base, "tjob-secret-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(secretDir)
	var b [16]byte
	rand.Read(b[:])
	marker := "TJOB-SECRET-" + hex.EncodeToString(b[:])
	secret := filepath.Join(secretDir, "ca.key")
	if err := os.WriteFile(secret, []byte(marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node, major, minor, err := blockDevice(secretDir)
	if err != nil {
		t.Skipf("no block device to read: %v", err)
	}
	off, err := physicalOffset(secret)
	if err != nil {
		t.Skipf("cannot find the file on its device: %v", err)
	}
	// The test itself, as root on the host, finds the secret there: the
	// check below means something.
	dev, err := os.Open(node)
	if err != nil {
		securityReport(t, "security: a masked file read from the raw block device",
			"not reachable on this host: even root outside any job cannot open %s (%v)", node, err)
		t.Skipf("this host refuses even root to open %s (%v): a job cannot either", node, err)
	}
	blk := make([]byte, 4096)
	n, _ := dev.ReadAt(blk, off)
	dev.Close()
	if !strings.Contains(string(blk[:n]), marker) {
		t.Skipf("the secret is not at byte %d of %s (delayed allocation?)", off, node)
	}

	for _, tc := range []struct{ name, script string }{
		{"via the host's " + node, fmt.Sprintf("dd if=%s bs=4096 skip=%d count=1", node, off/4096)},
		// Where the job may write: its /tmp, or its directory.
		{"via a device node the job makes (mknod)", fmt.Sprintf(`d=$(mktemp -d) && mknod $d/raw b %d %d && dd if=$d/raw bs=4096 skip=%d count=1; rm -rf "$d"`,
			major, minor, off/4096)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := newTestJob(t, "sh", "-c", "cat "+secret+" 2>&1; "+tc.script)
			j.MaskPaths = []string{secretDir}
			final(t, j.Run())
			out := string(readAll(t, j, false))
			if !strings.Contains(out, "No such file") && !strings.Contains(out, "can't open") {
				t.Fatalf("the mask did not hide %s: %q", secret, out[:min(len(out), 200)])
			}
			if strings.Contains(out, marker) {
				t.Fatalf("the job read the masked %s from block device %d:%d at byte %d, %s", secret, major, minor, off, tc.name)
			}
			securityReport(t, "security: a masked file read from the raw block device "+tc.name, "refused: %q", strings.TrimSpace(out))
		})
	}
}

// TestSecurityProcSysReadOnly: a root job sees the host's kernel settings
// in /proc/sys, most of which are not namespaced: kernel.core_pattern names
// a program the kernel runs as root outside every namespace when a process
// dumps core, so a job that can write it is out of the jail. The job must
// not be able to open these for writing. (Found by this test; the jail now
// mounts them read-only.)
func TestSecurityProcSysReadOnly(t *testing.T) {
	requireRoot(t)
	files := []string{"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger"}
	// Opening for writing writes nothing.
	script := `for f in "$@"; do if (: >> "$f") 2>/dev/null; then echo "$f writable"; else echo "$f refused"; fi; done`
	j := newTestJob(t, "sh", append([]string{"-c", script, "sh"}, files...)...)
	final(t, j.Run())
	out := strings.TrimSpace(string(readAll(t, j, false)))
	if strings.Contains(out, "writable") {
		t.Fatalf("from inside a job:\n%s", out)
	}
	securityReport(t, "security: host kernel settings in /proc/sys are read-only to a job", "%q", strings.Split(out, "\n"))
}
