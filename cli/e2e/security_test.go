package e2e

// Security end to end: certificates a client should not get in
// with, users who must not see each other's jobs, and what a job can reach
// from inside its jail, run through the real tjobs.

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/neildo/tjob/internal/testkit"

	"golang.org/x/sys/unix"
)

// writeForged writes, as NAME.crt and NAME.key in the env's .tjob, a client
// certificate for cn signed with the key of the client certificate signer
// (a leaf, not a CA), the signer's certificate after it as if it were an
// intermediate CA.
func (e *env) writeForged(t *testing.T, name, cn, signer string) {
	t.Helper()
	dir := filepath.Join(e.dir, ".tjob")
	certPEM, err := os.ReadFile(filepath.Join(dir, signer+".crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, signer+".key"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	parent, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signerKey := k.(*ecdsa.PrivateKey)
	key, err := ecdsa.GenerateKey(signerKey.Curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certPEM...)
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSecurityCertificates: certificates that chain to the CA but are not
// client certificates of a user get no RPC through, whatever CN they carry.
func TestSecurityCertificates(t *testing.T) {
	e := newEnv(t)
	e.runJob(t, "sleep", "1000") // cli's, which an impostor would see
	e.writeForged(t, "forged", "cli", "bob")

	for _, tc := range []struct {
		name, cert, key string
	}{
		{"client certificate signed by another client's key (leaf used as a CA)", "forged.crt", "forged.key"},
		{"the server's certificate presented as a client", "svc.crt", "svc.key"},
		{"the CA's own certificate presented as a client", "ca.crt", "ca.key"},
	} {
		before := strings.Count(e.log.String(), " refused: ")
		r := e.tjob(t, "ps", "-a", "-cert", ".tjob/"+tc.cert, "-key", ".tjob/"+tc.key)
		fails(t, r, 1, "rejected")
		if !eventually(5*time.Second, func() bool { return strings.Count(e.log.String(), " refused: ") > before }) {
			t.Errorf("%s: no refused handshake in the log", tc.name)
		}
		var refusal string
		for _, l := range strings.Split(e.log.String(), "\n") {
			if strings.Contains(l, " refused: ") {
				refusal = l[strings.Index(l, "refused: ")+len("refused: "):]
			}
		}
		report(t, "security: "+tc.name, "refused at the TLS handshake (server log: %q); the CLI says %q", refusal, strings.TrimSpace(r.stderr))
	}
	if strings.Contains(e.log.String(), "method=tjob.v1.Job/Status") {
		t.Fatalf("an RPC got through:\n%s", e.log.String())
	}
}

// TestSecurityIsolationEveryRPC: Bob's view through every command, with
// IDs and prefixes that match both his and Alice's (here cli's) jobs: he
// sees, stops and reads only his own, and a prefix shared with her jobs is
// not ambiguous to him.
func TestSecurityIsolationEveryRPC(t *testing.T) {
	e := newEnv(t)
	// cli's jobs, running; then Bob's until one shares its first character
	// with one of cli's and with none of Bob's others.
	cli := map[byte][]string{}
	for range 4 {
		id := e.runJob(t, "sleep", "1000")
		cli[id[0]] = append(cli[id[0]], id)
	}
	bob := map[byte][]string{}
	var shared string
	for range 64 {
		r := e.tjobAs(t, "bob", "run", "sleep", "1001")
		if r.code != 0 {
			t.Fatalf("bob's run: %v", r)
		}
		id := strings.TrimSpace(string(r.stdout))
		bob[id[0]] = append(bob[id[0]], id)
		shared = ""
		for c, ids := range bob {
			if len(ids) == 1 && len(cli[c]) > 0 {
				shared = ids[0]
			}
		}
		if shared != "" {
			break
		}
	}
	if shared == "" {
		t.Fatal("no prefix shared by Bob's and cli's jobs")
	}
	p := shared[:1]
	for _, args := range [][]string{{"logs", p}, {"logs", "-f", p}} {
		// The follow would wait for the end: stop it first, then read.
		if args[1] == "-f" {
			if r := e.tjobAs(t, "bob", "stop", p); r.code != 0 || strings.TrimSpace(string(r.stdout)) != shared {
				t.Fatalf("bob's stop %s: %v", p, r)
			}
		}
		if r := e.tjobAs(t, "bob", args...); r.code != 0 {
			t.Fatalf("bob's %q: %v", args, r)
		}
	}
	victim := cli[shared[0]][0]
	for _, args := range [][]string{
		{"logs", victim}, {"logs", "-f", victim}, {"stop", victim}, {"stop", victim[:8]},
		{"logs", strings.ToUpper(victim[:13])},
	} {
		fails(t, e.tjobAs(t, "bob", args...), 1, "no such job")
	}
	for _, args := range [][]string{{"ps"}, {"ps", "-a"}} {
		r := e.tjobAs(t, "bob", args...)
		rows := psRows(t, string(r.stdout))
		for short := range rows {
			found := false
			for _, id := range bob[short[0]] {
				found = found || strings.HasPrefix(id, short)
			}
			if !found {
				t.Fatalf("bob's %q lists %s", args, short)
			}
		}
	}
	for _, ids := range cli {
		for _, id := range ids {
			if row := psRows(t, e.ok(t, "ps"))[id[:8]]; !strings.Contains(row, "Up ") {
				t.Fatalf("cli's job %s after bob's attempts: %q", id, row)
			}
		}
	}
	report(t, "security: one user's jobs are invisible to another in every RPC",
		"Bob's ps, ps -a, logs, logs -f and stop, by full ID, 8-character, 1-character and upper-case prefix of cli's jobs: only his own jobs or \"no such job\"; his prefix %q, shared with a job of cli's, named his own job alone; cli's %d jobs ran on",
		p, 4)
}

// probeArg makes the e2e test binary a probe run as a job: see probeMain.
const probeArg = "tjob-e2e-probe"

func init() {
	if len(os.Args) > 1 && os.Args[1] == probeArg {
		os.Exit(probeMain(os.Args[2:]))
	}
}

// probeMain runs inside a job and reports, one "key: value" line each,
// what the job can see and do: its processes, its network interfaces,
// whether it can read each file in files, no_new_privs, its capabilities,
// and what the kernel answers to a remount of / and to loading a module.
func probeMain(files []string) int {
	ents, _ := os.ReadDir("/proc")
	var procs []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
			procs = append(procs, e.Name()+"="+strings.TrimSpace(string(comm)))
		}
	}
	fmt.Printf("processes: %s\n", strings.Join(procs, " "))
	ifs, _ := net.Interfaces()
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	fmt.Printf("interfaces: %s\n", strings.Join(names, " "))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Printf("read %s: %s\n", f, errnoOf(err))
		} else {
			fmt.Printf("read %s: read %d bytes\n", f, len(b))
		}
	}
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	fmt.Printf("no_new_privs: %d %v\n", nnp, err)
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "CapEff:") || strings.HasPrefix(l, "CapBnd:") {
			k, v, _ := strings.Cut(l, ":")
			fmt.Printf("%s: %s\n", k, strings.TrimSpace(v))
		}
	}
	fmt.Printf("remount /: %s\n", errnoOf(unix.Mount("", "/", "", unix.MS_REMOUNT, "")))
	fmt.Printf("init_module: %s\n", errnoOf(unix.InitModule([]byte("not a module"), "")))
	null, err := os.Open("/dev/null")
	if err == nil {
		fmt.Printf("finit_module: %s\n", errnoOf(unix.FinitModule(int(null.Fd()), "", 0)))
	}
	host, _ := os.Hostname()
	fmt.Printf("hostname: %s\n", host)
	// The host's files (here, beside this binary) and the job's own /tmp.
	fmt.Printf("write host file: %s\n", errnoOf(os.WriteFile(filepath.Join(filepath.Dir(os.Args[0]), "written-by-job"), []byte("x"), 0o644)))
	fmt.Printf("write /tmp: %s\n", errnoOf(os.WriteFile("/tmp/written-by-job", []byte("x"), 0o644)))
	return 0
}

// errnoOf names an error by its errno ("EPERM"), or "ok".
func errnoOf(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// TestSecurityInsideJob: a job run through tjobs, probing from inside,
// sees only its own processes and loopback, cannot read the server's key,
// the CA's key, a client's key or another job's output, has no_new_privs,
// cannot remount / or load a kernel module, and cannot write the host's
// files, only its own /tmp.
func TestSecurityInsideJob(t *testing.T) {
	// The probe is this test binary (built with -race on the host): more
	// memory than the default 20 MiB.
	e := newEnvWith(t, "-memory-mb", "512")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// go test builds this binary in $TMPDIR, which a job may not see: a
	// copy in a directory it can.
	if testkit.UnderTmp(self) {
		b, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		self = filepath.Join(jobVisibleDir(t), "e2e.test")
		if err := os.WriteFile(self, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := e.runJob(t, "echo", "a secret of cli's")
	e.waitJob(t, secret)
	dir := filepath.Join(e.dir, ".tjob")
	spoolFile := filepath.Join(dir, "state", "spool", secret+".out")
	if b, err := os.ReadFile(spoolFile); err != nil || !strings.Contains(string(b), "secret") {
		t.Fatalf("the other job's output is not where the test looks: %v", err)
	}
	files := []string{filepath.Join(dir, "svc.key"), filepath.Join(dir, "ca.key"), filepath.Join(dir, "bob.key"), spoolFile}
	// Bob runs the probe: the secret and the keys are not his.
	r := e.tjobAs(t, "bob", append([]string{"run", self, probeArg}, files...)...)
	if r.code != 0 {
		t.Fatalf("run the probe: %v", r)
	}
	id := strings.TrimSpace(string(r.stdout))
	out := string(e.ok(t, "logs", "-f", "-cert", ".tjob/bob.crt", "-key", ".tjob/bob.key", id))
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		got[k] = v
	}
	t.Logf("the probe says:\n%s", out)

	// Only the jail's init and the probe.
	if procs := strings.Fields(got["processes"]); len(procs) != 2 || !strings.HasPrefix(procs[0], "1=") {
		t.Errorf("the job sees processes %q", procs)
	}
	if got["interfaces"] != "lo" {
		t.Errorf("the job sees interfaces %q", got["interfaces"])
	}
	for _, f := range files {
		if v := got["read "+f]; v == "" || strings.HasPrefix(v, "read ") {
			t.Errorf("the job read %s: %q", f, v)
		}
	}
	if !strings.HasPrefix(got["no_new_privs"], "1 ") {
		t.Errorf("no_new_privs: %q", got["no_new_privs"])
	}
	const sysAdmin, sysModule = 21, 16
	for _, k := range []string{"CapEff", "CapBnd"} {
		caps, err := strconv.ParseUint(got[k], 16, 64)
		if err != nil || caps&(1<<sysAdmin) != 0 || caps&(1<<sysModule) != 0 {
			t.Errorf("%s %q: CAP_SYS_ADMIN or CAP_SYS_MODULE kept", k, got[k])
		}
	}
	if got["remount /"] != "EPERM" {
		t.Errorf("remount /: %q", got["remount /"])
	}
	// A kernel built without modules answers ENOSYS to anyone: then the
	// capability set above is what keeps a job from loading one.
	hostModule := errnoOf(unix.InitModule([]byte("not a module"), ""))
	for _, k := range []string{"init_module", "finit_module"} {
		if v := got[k]; v != "EPERM" && !(hostModule == "ENOSYS" && v == "ENOSYS") {
			t.Errorf("%s: %q (the host gets %s)", k, v, hostModule)
		}
	}
	if host, _ := os.Hostname(); got["hostname"] == host || got["hostname"] != id[:8] {
		t.Errorf("hostname %q", got["hostname"])
	}
	if got["write host file"] != "EROFS" {
		t.Errorf("writing a host file: %q", got["write host file"])
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(self), "written-by-job")); err == nil {
		t.Errorf("the job wrote a file on the host")
	}
	if got["write /tmp"] != "ok" {
		t.Errorf("writing its /tmp: %q", got["write /tmp"])
	}
	if _, err := os.Stat("/tmp/written-by-job"); err == nil {
		os.Remove("/tmp/written-by-job")
		t.Errorf("the job's /tmp is the host's")
	}
	var reads []string
	for _, f := range files {
		reads = append(reads, filepath.Base(f)+" "+got["read "+f])
	}
	report(t, "security: from inside a job (Bob's, via tjobs)",
		"processes %q; interfaces %q; %s; no_new_privs %s; CapEff %s; remount / %s; init_module %s, finit_module %s (the host itself gets %s); writing a host file %s, its own /tmp %s",
		got["processes"], got["interfaces"], strings.Join(reads, ", "), strings.Fields(got["no_new_privs"])[0], got["CapEff"],
		got["remount /"], got["init_module"], got["finit_module"], hostModule, got["write host file"], got["write /tmp"])
}

// TestSecurityBadServerLimits: tjobs with a negative or absurd limit does
// not start, and says which.
func TestSecurityBadServerLimits(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	certs := execTjobs(dir, "certs")
	if out, err := certs.CombinedOutput(); err != nil {
		t.Fatalf("tjobs certs: %v\n%s", err, out)
	}
	for _, tc := range []struct{ flag, value, want string }{
		{"-memory-mb", "-1", "MemoryMB is negative"},
		{"-cpu-percent", "100000", "CPUPercent 100000"},
		{"-pids-max", "3", "PidsMax 3 is below"},
		{"-write-bps", "-5", "WriteBPS is negative"},
	} {
		cmd := execTjobs(dir, "-addr", "127.0.0.1:0", tc.flag, tc.value)
		out, err := cmd.CombinedOutput()
		var ee interface{ ExitCode() int }
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("tjobs %s %s: %v: %q", tc.flag, tc.value, err, out)
			continue
		}
		report(t, "bad input: tjobs "+tc.flag+" "+tc.value, "exit 1: %q", strings.TrimSpace(string(out)))
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, ".tjob", "spool")); len(ents) != 0 {
		t.Errorf("spool: %v", ents)
	}
}

// TestSecurityJailAttacksViaTjobs: the audit's attacks, run as Bob's job
// through the real tjobs and CLI, with tjobs's defaults (a user namespace
// of the job's own, the seccomp filter): attaching to the jail's init,
// reading root's files (the server's keys among them), connecting to a
// root-only socket, reading and planting root's keys, lifting the job's
// limits through a cgroup mount of its own, and keeping file descriptors
// tjobs inherited. Each is refused.
func TestSecurityJailAttacksViaTjobs(t *testing.T) {
	requireRoot(t)
	file, socket, key := testkit.HostSecrets(t)
	planted := key + "-planted"
	defer testkit.HostKey(planted)
	// A descriptor tjobs inherits without close-on-exec, as from a
	// careless parent.
	leak, err := unix.Open(os.DevNull, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	unix.Close(leak)
	secret := e.runJob(t, "echo", "a secret of cli's")
	e.waitJob(t, secret)
	dir := filepath.Join(e.dir, ".tjob")
	files := []string{file, filepath.Join(dir, "svc.key"), filepath.Join(dir, "ca.key"), filepath.Join(dir, "state", "spool", secret+".out"), "/etc/shadow"}
	args := []string{"run", "sh", "-c", `"$0" "$@"; echo probe done; exec sleep 1000`, testkit.Probe(t),
		"-connect", socket, "-key", key, "-plant", planted, "-cgroup-attack"}
	for _, f := range files {
		args = append(args, "-read", f)
	}
	r := e.tjobAs(t, "bob", args...)
	if r.code != 0 {
		t.Fatalf("run the probe: %v", r)
	}
	id := strings.TrimSpace(string(r.stdout))
	bob := []string{"-cert", ".tjob/bob.crt", "-key", ".tjob/bob.key"}
	var out string
	if !eventually(time.Minute, func() bool {
		out = string(e.ok(t, append([]string{"logs"}, append(bob, id)...)...))
		return strings.Contains(out, "probe done\n")
	}) {
		t.Fatalf("the probe did not finish: %q", out)
	}
	// The job's memory limit, seen from the host after its attack.
	limit := ""
	for _, d := range testkit.CgroupsNamed([]string{id}) {
		for _, f := range []string{"memory.max", "memory.limit_in_bytes"} {
			if b, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				limit = strings.TrimSpace(string(b))
			}
		}
	}
	e.ok(t, append([]string{"stop"}, append(bob, id)...)...)
	t.Logf("the probe says:\n%s", out)
	got := testkit.ProbeResults(out)

	refused := []string{"ptrace init", "read /proc/1/mem", "raise init oom_score_adj", "new user namespace",
		"connect " + socket, "read key " + key, "plant key " + planted, "cgroup attack", "mount tmpfs", "keyctl", "bpf"}
	for _, f := range files {
		refused = append(refused, "read "+f)
	}
	testkit.WantProbeRefused(t, got, planted, refused...)
	if want := fmt.Sprint(20 << 20); limit != want {
		t.Errorf("the job's memory limit after its attack: %q, want %s", limit, want)
	}
	if got["fds"] != "0 1 2" || got["seccomp"] != "2" || !strings.HasPrefix(got["uid_map"], `"0 `) || got["uid_map"] == `"0 0 4294967295"` {
		t.Errorf("fds %q, seccomp %q, uid_map %s: want 0 1 2, a filter, and a user namespace", got["fds"], got["seccomp"], got["uid_map"])
	}
	for _, l := range strings.Split(strings.Trim(got["cgroup"], `"`), `\n`) {
		if !strings.HasSuffix(l, ":/") {
			t.Errorf("the job sees its cgroup as %q, want the root of its cgroup namespace", l)
		}
	}
	if got["write workdir"] != "ok" || got["write /tmp"] != "ok" {
		t.Errorf("the job cannot write its own directory (%s) or /tmp (%s)", got["write workdir"], got["write /tmp"])
	}
	var reads []string
	for _, f := range files {
		reads = append(reads, filepath.Base(f)+" "+got["read "+f])
	}
	report(t, "security: attacks from inside a job (Bob's, via tjobs and the CLI)",
		"ptrace of the init %s, /proc/1/mem %s, its oom_score_adj %s; the init's %s threads CapEff %s NoNewPrivs %s; new user namespace %s; "+
			"cgroup-mount attack %s (memory limit on the host still %s); %s; root's socket %s; root's key %s, planting one %s; fds %s; seccomp %s; uid_map %s",
		got["ptrace init"], got["read /proc/1/mem"], got["raise init oom_score_adj"], got["init threads"], got["init threads CapEff"],
		got["init threads NoNewPrivs"], got["new user namespace"], got["cgroup attack"], limit, strings.Join(reads, ", "),
		got["connect "+socket], got["read key "+key], got["plant key "+planted], got["fds"], got["seccomp"], got["uid_map"])
}
