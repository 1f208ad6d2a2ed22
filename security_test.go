//go:build linux

package tjob

// Security of the jail against a job that attacks it: ways around
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
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// testUserNS is the host ID range the tests' user namespaces map to.
var testUserNS = IDMap{HostID: 1_500_000_000, Size: 65536}

// jobDir is a directory a job in testUserNS may work in: under /var/tmp,
// which jobs see, owned by the job's root.
func jobDir(t testing.TB) string {
	t.Helper()
	dir := testkit.JobVisible(t)
	if err := os.Chown(dir, int(testUserNS.HostID), int(testUserNS.HostID)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// memoryLimit reads a running job's memory limit from the host.
func memoryLimit(t *testing.T, j *Job) string {
	t.Helper()
	dir := jobCgroup(t, j).(cgroupDirer).dirOf("memory")
	for _, f := range []string{"memory.max", "memory.limit_in_bytes"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no memory limit in %s", dir)
	return ""
}

// TestSecurityJailAttacks runs, as a jailed job in a user namespace, what a
// hostile user with a valid certificate tried: attach to the jail's init
// and borrow its threads' capabilities, lift its own limits through a
// cgroup mount of its own, reach root's files, sockets and keys, and keep
// file descriptors it was not given. Each is refused. (Each succeeded
// before the user namespace, the seccomp filter and the init's hardening.)
// Without the seccomp filter the kernel's own checks still hold: the job
// may then make a user namespace of its own, but its root there is still
// an unprivileged user on the host, and its limits stay.
func TestSecurityJailAttacks(t *testing.T) {
	requireRoot(t)
	requireCgroups(t)
	file, socket, key := testkit.HostSecrets(t)
	// A descriptor this process has without close-on-exec, as a server
	// started by a careless parent would.
	leak, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leak)

	for _, filtered := range []bool{true, false} {
		name := map[bool]string{true: "seccomp", false: "no seccomp"}[filtered]
		t.Run(name, func(t *testing.T) {
			planted := key + "-planted"
			defer testkit.HostKey(planted)
			j := newTestJob(t, "sh", "-c", `"$0" "$@"; echo probe done; exec sleep 1000`, testkit.Probe(t),
				"-read", file, "-read", "/root/.tjob-nonexistent", "-connect", socket, "-key", key, "-plant", planted, "-cgroup-attack")
			j.UserNS = testUserNS
			j.NoSeccomp = !filtered
			j.Dir = jobDir(t)
			j.ReadOnlyRoot = true
			j.MemoryMB = 64
			done := j.Run()
			waitOutput(t, j, "probe done\n")
			limit := memoryLimit(t, j)
			j.Stop()
			final(t, done)
			out := string(readAll(t, j, false))
			t.Logf("the probe says:\n%s", out)
			got := testkit.ProbeResults(out)

			refused := []string{"ptrace init", "read /proc/1/mem", "raise init oom_score_adj",
				"read " + file, "connect " + socket, "read key " + key, "cgroup attack", "mount tmpfs"}
			if filtered {
				refused = append(refused, "new user namespace", "keyctl", "bpf", "plant key "+planted)
			}
			// Without the filter a key lands in the job's own user's
			// keyring, not root's, which WantProbeRefused checks.
			testkit.WantProbeRefused(t, got, planted, refused...)
			if want := fmt.Sprint(64 << 20); limit != want {
				t.Errorf("the job's memory limit after its attack: %s, want %s", limit, want)
			}
			if got["fds"] != "0 1 2" {
				t.Errorf("the job has file descriptors %q, want 0 1 2", got["fds"])
			}
			for _, l := range strings.Split(strings.Trim(got["cgroup"], `"`), `\n`) {
				if !strings.HasSuffix(l, ":/") {
					t.Errorf("the job sees its cgroup as %q, want the root of its cgroup namespace", l)
				}
			}
			if wantSeccomp := map[bool]string{true: "2", false: "0"}[filtered]; got["seccomp"] != wantSeccomp || got["no_new_privs"] != "1" {
				t.Errorf("seccomp %q, no_new_privs %q: want %s and 1", got["seccomp"], got["no_new_privs"], wantSeccomp)
			}
			if got["write workdir"] != "ok" || got["write /tmp"] != "ok" {
				t.Errorf("the job cannot write its own directory (%s) or /tmp (%s)", got["write workdir"], got["write /tmp"])
			}
			securityReport(t, "security: attacks from inside a jailed job (library, user namespace, "+name+")",
				"ptrace of the init %s, /proc/1/mem %s, raising its oom_score_adj %s; the init's %s threads have CapEff %s and NoNewPrivs %s; "+
					"new user namespace %s, cgroup-mount attack %s (memory limit on the host still %s); root's 0600 file %s, root's 0660 socket %s, "+
					"root's key %s, planting a key %s; keyctl %s, bpf %s, mount %s; seccomp %s; fds %q; cgroup %s",
				got["ptrace init"], got["read /proc/1/mem"], got["raise init oom_score_adj"], got["init threads"], got["init threads CapEff"],
				got["init threads NoNewPrivs"], got["new user namespace"], got["cgroup attack"], limit, got["read "+file], got["connect "+socket],
				got["read key "+key], got["plant key "+planted], got["keyctl"], got["bpf"], got["mount tmpfs"], got["seccomp"], got["fds"], got["cgroup"])
		})
	}
}

// TestUserNSJobsStillWork: in a user namespace, under the seccomp filter,
// a job still does what jobs do: ping its loopback, write its directory and
// /tmp, run out of memory and say so, exit with its code or die by its
// signal, and stop by SIGTERM, or SIGKILL when it ignores that.
func TestUserNSJobsStillWork(t *testing.T) {
	requireRoot(t)
	requireCgroups(t)
	job := func(t *testing.T, script string) *Job {
		j := newTestJob(t, "sh", "-c", script)
		j.UserNS = testUserNS
		j.Dir = jobDir(t)
		j.ReadOnlyRoot = true
		return j
	}
	t.Run("ping", func(t *testing.T) {
		if _, err := exec.LookPath("ping"); err != nil {
			t.Skip("no ping here (apt-get install iputils-ping)")
		}
		j := job(t, "ping -c 1 -W 5 127.0.0.1")
		if st := final(t, j.Run()); st.Exit != 0 {
			t.Fatalf("ping: %v\n%s", st, readAll(t, j, false))
		}
	})
	t.Run("files", func(t *testing.T) {
		j := job(t, "echo mine > f && cat f && echo tmp > /tmp/f && cat /tmp/f && id -u")
		if st := final(t, j.Run()); st.Exit != 0 {
			t.Fatalf("%v\n%s", st, readAll(t, j, false))
		}
		if out := string(readAll(t, j, false)); out != "mine\ntmp\n0\n" {
			t.Fatalf("output %q, want mine, tmp and uid 0", out)
		}
		fi, err := os.Stat(filepath.Join(j.Dir, "f"))
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != testUserNS.HostID {
			t.Fatalf("the job's file on the host: %v, want it owned by host uid %d", err, testUserNS.HostID)
		}
	})
	t.Run("workspace on disk", func(t *testing.T) {
		// A file bigger than the job's memory, in its /tmp, which is a
		// directory of the host's disk.
		j := job(t, "cd /tmp && dd if=/dev/zero of=big bs=1M count=64 2>/dev/null && ls -l big | wc -l")
		j.TmpDir, j.Dir = blockDir(t), "/tmp"
		if err := os.Chown(j.TmpDir, int(testUserNS.HostID), int(testUserNS.HostID)); err != nil {
			t.Fatal(err)
		}
		j.MemoryMB = 20
		if st := final(t, j.Run()); st.Exit != 0 || st.OOMKilled {
			t.Fatalf("%v (OOM %v)\n%s", st, st.OOMKilled, readAll(t, j, false))
		}
		fi, err := os.Stat(filepath.Join(j.TmpDir, "big"))
		if err != nil || fi.Size() != 64<<20 {
			t.Fatalf("the job's 64 MiB file on the host: %v %v", fi, err)
		}
	})
	t.Run("out of memory", func(t *testing.T) {
		j := job(t, "dd if=/dev/zero of=/dev/null bs=100M count=1")
		j.MemoryMB = 20
		st := final(t, j.Run())
		if !st.OOMKilled || st.Exit != 137 {
			t.Fatalf("status %v (exit %d, OOMKilled %v), want out of memory", st, st.Exit, st.OOMKilled)
		}
	})
	t.Run("exit codes", func(t *testing.T) {
		for script, want := range map[string]int64{"exit 7": 7, "kill -TERM $$": 143, "kill -SEGV $$": 139} {
			if st := final(t, job(t, script).Run()); st.Exit != want {
				t.Errorf("%q: exit %d, want %d", script, st.Exit, want)
			}
		}
	})
	t.Run("stop", func(t *testing.T) {
		for script, want := range map[string]syscall.Signal{
			"echo ready; exec sleep 1000":                            syscall.SIGTERM,
			`trap "" TERM; echo ready; while :; do sleep 0.05; done`: syscall.SIGKILL,
		} {
			j := job(t, script)
			j.GracePeriod = 300 * time.Millisecond
			done := j.Run()
			waitOutput(t, j, "ready\n")
			j.Stop()
			if st := final(t, done); st.Signal != want || !st.StopRequested {
				t.Errorf("%q stopped: %v, want ended by %v", script, st, want)
			}
		}
	})
}
