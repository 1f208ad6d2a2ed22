// Package testkit holds what the tests of tjob, tjobs and the tjob CLI
// share: a temporary directory the server's jobs can see (they have a /tmp
// of their own, so t.TempDir is hidden from them), looks at the host's
// processes and cgroups, and the reliability suite's reporting and scale.
package testkit

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// JobVisible makes a temporary directory under the current directory, or
// under /var/tmp when that is in /tmp too, open to every user (a job in a
// user namespace is an unprivileged one on the host), and removes it when t
// ends.
func JobVisible(t testing.TB) string {
	t.Helper()
	base, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if UnderTmp(base) {
		base = "/var/tmp"
	}
	dir, err := os.MkdirTemp(base, ".tjob-test-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(abs) })
	return abs
}

// UnderTmp reports whether path is in /tmp or $TMPDIR, which a job of the
// server may not see.
func UnderTmp(path string) bool {
	for _, tmp := range []string{"/tmp", os.TempDir()} {
		if rel, err := filepath.Rel(tmp, path); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}

// Eventually polls cond until it holds or d passes.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ProcessesWith lists the pids whose command line has arg.
func ProcessesWith(arg string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(b), "\x00"), arg) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// Children lists the pids of pid's child processes (every thread's).
func Children(pid int) []int {
	var kids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, w := range strings.Fields(string(b)) {
			if kid, err := strconv.Atoi(w); err == nil {
				kids = append(kids, kid)
			}
		}
	}
	return kids
}

// GoroutineSummary sums up a Go program's SIGQUIT dump (the goroutines'
// stacks): how many goroutines wait in each function of fromPkg, with the
// state they wait in, most first, at most top lines.
func GoroutineSummary(dump, fromPkg string, top int) string {
	counts := map[string]int{}
	for _, block := range strings.Split(dump, "\n\n") {
		head, frames, ok := strings.Cut(block, "\n")
		if !ok || !strings.HasPrefix(head, "goroutine ") {
			continue
		}
		state := ""
		if _, s, ok := strings.Cut(head, "["); ok {
			state, _, _ = strings.Cut(strings.TrimSuffix(s, "]:"), ",")
		}
		for _, f := range strings.Split(frames, "\n") {
			if strings.Contains(f, fromPkg) && !strings.HasPrefix(f, "\t") && !strings.HasPrefix(f, "created by ") {
				fn := f[strings.LastIndex(f, "/")+1:]
				if i := strings.LastIndex(fn, "("); i > 0 {
					fn = fn[:i] // the arguments
				}
				counts[fn+" ["+state+"]"]++
				break
			}
		}
	}
	places := slices.Collect(maps.Keys(counts))
	slices.SortFunc(places, func(a, b string) int { return cmp.Compare(counts[b], counts[a]) })
	var lines []string
	for _, p := range places[:min(top, len(places))] {
		lines = append(lines, fmt.Sprintf("%d in %s", counts[p], p))
	}
	return strings.Join(lines, "; ")
}

// CgroupsNamed lists the directories under the cgroup file systems whose
// name has one of the ids in it.
func CgroupsNamed(ids []string) []string {
	var found []string
	filepath.WalkDir("/sys/fs/cgroup", func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		for _, id := range ids {
			if strings.Contains(d.Name(), id) {
				found = append(found, path)
			}
		}
		return nil
	})
	return found
}

// Report logs a reliability case's result line for docs/RELIABILITY.md:
// name is "section: case" ("bad input", "fault", "load", "security").
func Report(t testing.TB, name, format string, args ...any) {
	t.Helper()
	section, item, _ := strings.Cut(name, ": ")
	t.Logf("RELIABILITY: %s: %s: %s", section, strings.ReplaceAll(item, ": ", ", "), fmt.Sprintf(format, args...))
}

// ScaledDown: in the cgroup v2 test VM (software emulation, 2 GiB) and in
// -short, the heavy cases run smaller.
func ScaledDown() bool {
	return testing.Short() || (os.Getenv("TJOB_REQUIRE_CGROUP") == "v2" && os.Getenv("TJOB_BIN_DIR") != "")
}

// Soak: TJOB_SOAK=1 runs the long versions (CI turns it on once).
func Soak() bool { return os.Getenv("TJOB_SOAK") == "1" }

// Probe returns the path of the tjob-probe binary (test/probe), which a job
// of any user may run: $TJOB_PROBE where the tests have no Go toolchain
// (the VM), or else built once, static, into a directory open to everyone.
func Probe(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TJOB_PROBE"); p != "" {
		return p
	}
	probe.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("/var/tmp", ".tjob-probe-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			probe.err = err
			return
		}
		probe.path = filepath.Join(dir, "tjob-probe")
		cmd := exec.Command("go", "build", "-o", probe.path, "./test/probe")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probe.err = fmt.Errorf("go build ./test/probe: %v\n%s", err, out)
		}
	})
	if probe.err != nil {
		t.Fatal(probe.err)
	}
	return probe.path
}

var probe struct {
	once sync.Once
	path string
	err  error
}

// RemoveProbe removes the probe Probe built, if it built one; for TestMain.
func RemoveProbe() {
	if probe.path != "" && os.Getenv("TJOB_PROBE") == "" {
		os.RemoveAll(filepath.Dir(probe.path))
	}
}

// ProbeResults parses the probe's "name: result" lines.
func ProbeResults(out string) map[string]string {
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			got[k] = v
		}
	}
	return got
}

// HostSecrets makes what a job must not reach on the host: a file only
// root may read, a unix socket only root may connect to (it answers a
// secret), and a key in root's user keyring. It returns their paths and
// the key's description; all are gone when t ends.
func HostSecrets(t testing.TB) (file, socket, key string) {
	t.Helper()
	dir := JobVisible(t)
	file = filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	socket = filepath.Join(dir, "root.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("answered as root"))
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	key = fmt.Sprintf("tjob-test-%d", os.Getpid())
	id, err := unix.AddKey("user", key, []byte("host key secret"), unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Skipf("cannot add a key to root's keyring: %v", err)
	}
	t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0) })
	return file, socket, key
}

// HostKey reads a key of root's user keyring, and removes it; "" when
// there is none.
func HostKey(desc string) string {
	ring, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, false)
	if err != nil {
		return ""
	}
	id, err := unix.KeyctlSearch(ring, "user", desc, 0)
	if err != nil {
		return ""
	}
	buf := make([]byte, 256)
	n, _ := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	unix.KeyctlInt(unix.KEYCTL_UNLINK, id, ring, 0, 0)
	return string(buf[:min(n, len(buf))])
}

// KeptCaps are the capabilities a job keeps: Docker's default set less
// CAP_MKNOD, as /proc/PID/status prints them.
const KeptCaps = "00000000a00425fb"

// WantProbeRefused fails t for each probe result in names that is missing
// or says the attack worked; and where the probe found an init thread with
// more than KeptCaps, or without no_new_privs, or a key planted in root's
// keyring with planted as its description.
func WantProbeRefused(t testing.TB, got map[string]string, planted string, names ...string) {
	t.Helper()
	for _, name := range names {
		if v := got[name]; v == "" || strings.HasPrefix(v, "ok") {
			t.Errorf("%s: %q, want it refused", name, v)
		}
	}
	if v := HostKey(planted); v != "" {
		t.Errorf("the job planted a key in root's keyring: %q", v)
	}
	if got["init threads CapEff"] != KeptCaps || got["init threads NoNewPrivs"] != "1" {
		t.Errorf("the init's threads: CapEff %q, NoNewPrivs %q; want %s and 1 on every one",
			got["init threads CapEff"], got["init threads NoNewPrivs"], KeptCaps)
	}
}
