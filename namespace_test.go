//go:build linux

package tjob

import (
	"github.com/neildo/tjob/internal/jobinit"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of the jail: what a job sees from inside its namespaces, and what
// the host sees of it.

func TestJailProcIsItsOwn(t *testing.T) {
	requireRoot(t)
	j, st := runShell(t, `tr '\0' '\n' </proc/1/cmdline; ls /proc | grep -c '^[0-9]'`)
	out := strings.Fields(string(readAll(t, j, false)))
	if st.Exit != 0 || len(out) != 2 {
		t.Fatalf("status %+v, output %q", st, out)
	}
	if out[0] != jobinit.Arg0 {
		t.Fatalf("PID 1 is %q, want the jail's init %q", out[0], jobinit.Arg0)
	}
	// init, sh, ls and grep at most.
	if n, _ := strconv.Atoi(out[1]); n < 2 || n > 4 {
		t.Fatalf("the job sees %d processes, want only its own", n)
	}
}

func TestJailNetworkIsLoopbackOnly(t *testing.T) {
	requireRoot(t)
	j, _ := runShell(t, `tail -n +3 /proc/net/dev | cut -d: -f1; ls /sys/class/net`)
	if got := strings.Fields(string(readAll(t, j, false))); strings.Join(got, " ") != "lo lo" {
		t.Fatalf("interfaces in the jail: %q, want only lo", got)
	}
}

func TestJailPingLoopback(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping is not installed (Debian package iputils-ping)")
	}
	j, st := runShell(t, "ping -c1 -W1 127.0.0.1")
	if st.Exit != 0 {
		t.Fatalf("ping in the jail failed: %+v\n%s", st, readAll(t, j, false))
	}
}

func TestJailHostname(t *testing.T) {
	requireRoot(t)
	host, _ := os.Hostname()
	j, _ := runShell(t, "hostname")
	got := strings.TrimSpace(string(readAll(t, j, false)))
	if got != j.ID[:8] || got == host {
		t.Fatalf("hostname in the jail = %q, want %q (host is %q)", got, j.ID[:8], host)
	}
}

// The jail's own mounts (here the tmpfs that masks a directory, and /proc)
// never reach the host. The job itself cannot mount: it has no
// CAP_SYS_ADMIN.
func TestJailMountsStayInside(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	j := newTestJob(t, "sh", "-c", "grep -c ' "+dir+" ' /proc/self/mountinfo; echo ready; sleep 1000")
	j.MaskPaths = []string{dir}
	ch := j.Run()
	waitOutput(t, j, "1\nready\n")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	j.Stop()
	final(t, ch)
	if strings.Contains(string(mi), " "+dir+" ") {
		t.Fatal("a mount made in the jail is visible on the host")
	}
	j, st := runShell(t, "mount -t tmpfs tjob-test "+dir)
	if st.Exit == 0 {
		t.Fatalf("the job could mount a file system: %s", readAll(t, j, false))
	}
}

// The job cannot read what MaskPaths hides, nor any job's output spool.
func TestJailMasks(t *testing.T) {
	requireRoot(t)
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, "key"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(secretFile, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := newTestJob(t, "sh", "-c", `cat "$1"/key "$2" "$3"/*.out; echo done`, "sh", secretDir, secretFile, "")
	j.Args[len(j.Args)-1] = j.SpoolDir
	j.MaskPaths = []string{secretDir, secretFile}
	final(t, j.Run())
	out := string(readAll(t, j, false))
	if strings.Contains(out, "secret") || !strings.HasSuffix(out, "done\n") {
		t.Fatalf("the job read a masked path: %q", out)
	}
}

func TestJailHardening(t *testing.T) {
	requireRoot(t)
	j, _ := runShell(t, `grep -E '^(NoNewPrivs|CapBnd|CapEff)' /proc/self/status; mount -o remount,rw / && echo remounted`)
	out := string(readAll(t, j, false))
	if !strings.Contains(out, "NoNewPrivs:\t1") {
		t.Fatalf("no_new_privs is not set:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Cap") {
			caps, _ := strconv.ParseUint(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), 16, 64)
			const sysAdmin, sysModule = 21, 16
			if caps&(1<<sysAdmin) != 0 || caps&(1<<sysModule) != 0 {
				t.Fatalf("the job keeps CAP_SYS_ADMIN or CAP_SYS_MODULE: %s", line)
			}
		}
	}
	if strings.Contains(out, "remounted") {
		t.Fatal("the job could remount /")
	}
}

// SIGTERM reaches the command through the jail's init, so Stop does not wait
// for the grace period.
func TestJailStopUsesTerm(t *testing.T) {
	requireRoot(t)
	j := newTestJob(t, "sleep", "1000")
	j.GracePeriod = time.Hour
	ch := j.Run()
	j.Stop()
	if st := final(t, ch); st.Signal != syscall.SIGTERM {
		t.Fatalf("status = %+v, want ended by SIGTERM", st)
	}
}

// A daemon the job leaves behind is gone once the job has ended, and once it
// has been stopped.
func TestJailLeavesNothing(t *testing.T) {
	requireRoot(t)
	const marker = "31338"
	_, st := runShell(t, "setsid sh -c 'sleep "+marker+"' & sleep 0.2")
	if st.Exit != 0 {
		t.Fatalf("status = %+v", st)
	}
	assertNoProcess(t, "sleep", marker)

	j := newTestJob(t, "sh", "-c", "setsid sleep "+marker+" & echo started; sleep 1000")
	ch := j.Run()
	waitOutput(t, j, "started\n")
	j.Stop()
	final(t, ch)
	assertNoProcess(t, "sleep", marker)
}

// Orphans are reparented to the jail's init, which reaps them.
func TestJailReapsOrphans(t *testing.T) {
	requireRoot(t)
	// The inner shell exits at once, leaving its sleep to the jail's init.
	j, _ := runShell(t, `sh -c 'sleep 0.1 &' ; sleep 0.5; cat /proc/[0-9]*/stat`)
	out := string(readAll(t, j, false))
	if !strings.HasPrefix(out, "1 (") {
		t.Fatalf("no process table read: %q", out)
	}
	if strings.Contains(out, ") Z ") {
		t.Fatalf("a zombie was left unreaped:\n%s", out)
	}
}

// Exit codes and signals are the same with and without the jail.
func TestJailExitMatchesNoJail(t *testing.T) {
	requireRoot(t)
	for _, script := range []string{"exit 0", "exit 7", "kill -TERM $$", "kill -KILL $$", "kill -SEGV $$"} {
		var got [2]Status
		for i, jail := range []bool{true, false} {
			j := newTestJob(t, "sh", "-c", script)
			j.NoJail = !jail
			got[i] = final(t, j.Run())
		}
		if got[0].Exit != got[1].Exit || got[0].Signal != got[1].Signal {
			t.Errorf("%q: jail %d/%v, no jail %d/%v", script, got[0].Exit, got[0].Signal, got[1].Exit, got[1].Signal)
		}
	}
}

// When the job runs out of memory, the kernel picks the job's process, not
// the jail's init that reports on it.
func TestJailInitSparedByOOMKiller(t *testing.T) {
	requireRoot(t)
	probe := exec.Command("sleep", "10")
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(probe.Process.Pid), "oom_score_adj"), []byte("-999"), 0)
	probe.Process.Kill()
	probe.Wait()
	if err != nil {
		t.Skipf("this machine does not let root lower an OOM score (no CAP_SYS_RESOURCE?): %v", err)
	}
	j := newTestJob(t, "sh", "-c", "cat /proc/self/oom_score_adj; sleep 1000")
	ch := j.Run()
	waitOutput(t, j, "0\n")
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(j.Summary().Pid), "oom_score_adj"))
	j.Stop()
	final(t, ch)
	if err != nil || strings.TrimSpace(string(b)) != "-999" {
		t.Fatalf("the jail's init has oom_score_adj %q (%v), want -999", b, err)
	}
}

// The job's /dev holds only harmless devices, and it cannot make others.
func TestJailDevIsMinimal(t *testing.T) {
	requireRoot(t)
	j, st := runShell(t, `ls /dev | tr '\n' ' '; echo; echo x >/dev/null && head -c 4 /dev/urandom | wc -c; mknod /tmp/tjob-disk b 1 0 && echo made a node`)
	out := string(readAll(t, j, false))
	lines := strings.Split(out, "\n")
	if st.Exit == 0 || len(lines) < 2 {
		t.Fatalf("status %+v, output %q", st, out)
	}
	want := "fd full null random shm stderr stdin stdout tty urandom zero "
	if lines[0] != want {
		t.Fatalf("/dev in the jail holds %q, want %q", lines[0], want)
	}
	if strings.TrimSpace(lines[1]) != "4" || strings.Contains(out, "made a node") {
		t.Fatalf("devices do not work, or mknod did: %q", out)
	}
}

// With ReadOnlyRoot the job writes only into its Dir and a private /tmp.
func TestJailReadOnlyRoot(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	// A host directory outside both Dir and /tmp.
	hostDir, err := os.MkdirTemp("/", "tjob-ro-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(hostDir)
	outside := filepath.Join(hostDir, "written")
	j := newTestJob(t, "sh", "-c", `touch in-dir && echo dir ok; touch /tmp/tjob-private && echo tmp ok; touch "$1" && echo outside written; mount -o remount,rw / && echo remounted; true`, "sh", outside)
	j.Dir = dir
	j.ReadOnlyRoot = true
	final(t, j.Run())
	out := string(readAll(t, j, false))
	if out != "dir ok\ntmp ok\n" && !strings.HasPrefix(out, "dir ok\ntmp ok\n") {
		t.Fatalf("output %q", out)
	}
	if strings.Contains(out, "outside written") || strings.Contains(out, "remounted") {
		t.Fatalf("the job wrote outside its directory: %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "in-dir")); err != nil {
		t.Fatalf("the job's file is not in its Dir on the host: %v", err)
	}
	if _, err := os.Stat("/tmp/tjob-private"); err == nil {
		os.Remove("/tmp/tjob-private")
		t.Fatal("the job's /tmp is the host's")
	}
	if _, err := os.Stat(outside); err == nil {
		t.Fatal("the job wrote outside its directory")
	}
}
