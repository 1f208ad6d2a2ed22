// Command tjob-probe runs inside a job and tries, one at a time, the attacks
// the jail must refuse and the things a job must still be able to do. It
// prints one "name: result" line each: "ok" where the attempt worked, or
// the errno (EPERM, EACCES, ...) the kernel answered, followed by what it
// read where that matters. Tests run it as a job and judge the lines.
//
//	tjob-probe [-read FILE]... [-connect SOCKET]... [-key DESC] [-plant DESC] [-cgroup-attack]
//
// It is static (CGO_ENABLED=0) so that it runs in the test VM too.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "cgroup-attack-child" {
		os.Exit(cgroupAttackChild())
	}
	if len(os.Args) > 1 && os.Args[1] == "true" {
		os.Exit(0)
	}
	var reads, sockets list
	flag.Var(&reads, "read", "try to read `file`")
	flag.Var(&sockets, "connect", "try to connect to unix `socket`")
	key := flag.String("key", "", "try to read the user key `desc` from the user keyring")
	plant := flag.String("plant", "", "try to add the user key `desc` to the user keyring")
	attack := flag.Bool("cgroup-attack", false, "try to lift the job's memory limit through a cgroup mount of its own")
	flag.Parse()

	fds() // first: the probe opens files of its own later
	initThreads()
	ptraceInit()
	say("read /proc/1/mem", errOf(readMem()))
	say("raise init oom_score_adj", errOf(os.WriteFile("/proc/1/oom_score_adj", []byte("1000"), 0)))
	say("new user namespace", errOf(spawn(unix.CLONE_NEWUSER)))
	for _, f := range reads {
		_, err := os.ReadFile(f)
		say("read "+f, errOf(err))
	}
	for _, s := range sockets {
		c, err := net.Dial("unix", s)
		if err == nil {
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Close()
			say("connect "+s, "ok "+strconv.Quote(string(buf[:n])))
			continue
		}
		say("connect "+s, errOf(err))
	}
	if *key != "" {
		say("read key "+*key, readKey(*key))
	}
	if *plant != "" {
		_, err := unix.AddKey("user", *plant, []byte("planted by a job"), unix.KEY_SPEC_USER_KEYRING)
		say("plant key "+*plant, errOf(err))
	}
	if *attack {
		say("cgroup attack", cgroupAttack())
	}
	cg, _ := os.ReadFile("/proc/self/cgroup")
	say("cgroup", strconv.Quote(strings.TrimSpace(string(cg))))
	say("seccomp", statusField("self", "Seccomp"))
	say("no_new_privs", statusField("self", "NoNewPrivs"))
	say("CapEff", statusField("self", "CapEff"))
	say("uid_map", strconv.Quote(strings.Join(strings.Fields(readString("/proc/self/uid_map")), " ")))
	wd, _ := os.Getwd()
	say("write workdir", errOf(os.WriteFile(filepath.Join(wd, ".tjob-probe"), []byte("x"), 0o644)))
	say("write /tmp", errOf(os.WriteFile("/tmp/.tjob-probe", []byte("x"), 0o644)))
	say("mount tmpfs", errOf(unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "")))
	say("keyctl", errOf(keyctlAny()))
	say("bpf", errOf(bpfAny()))
}

func say(name, result string) { fmt.Printf("%s: %s\n", name, result) }

// errOf names an error by its errno ("EPERM"), or says "ok".
func errOf(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return "exit " + strconv.Itoa(ee.ExitCode())
	}
	return strconv.Quote(err.Error())
}

// initThreads: what each thread of the jail's init may do.
func initThreads() {
	tasks, err := os.ReadDir("/proc/1/task")
	if err != nil {
		say("init threads", errOf(err))
		return
	}
	caps, nnp := map[string]bool{}, map[string]bool{}
	for _, t := range tasks {
		caps[statusField("1/task/"+t.Name(), "CapEff")] = true
		nnp[statusField("1/task/"+t.Name(), "NoNewPrivs")] = true
	}
	say("init threads", strconv.Itoa(len(tasks)))
	say("init threads CapEff", strings.Join(keys(caps), " "))
	say("init threads NoNewPrivs", strings.Join(keys(nnp), " "))
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func statusField(pid, field string) string {
	for _, l := range strings.Split(readString("/proc/"+pid+"/status"), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// ptraceInit attaches to the jail's init, as strace -p 1 would, and lets go
// at once if it could.
func ptraceInit() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err := unix.PtraceAttach(1)
	if err == nil {
		var ws unix.WaitStatus
		unix.Wait4(1, &ws, unix.WALL, nil)
		unix.PtraceDetach(1)
	}
	say("ptrace init", errOf(err))
}

func readMem() error {
	f, err := os.Open("/proc/1/mem")
	if err != nil {
		return err
	}
	defer f.Close()
	maps := readString("/proc/1/maps")
	start, _, _ := strings.Cut(maps, "-")
	addr, err := strconv.ParseInt(start, 16, 64)
	if err != nil {
		return fmt.Errorf("no maps of the init")
	}
	buf := make([]byte, 16)
	_, err = f.ReadAt(buf, addr)
	return err
}

// spawn starts this program again (it exits at once) in new namespaces
// flags: the kernel, or the seccomp filter, may refuse to make them.
func spawn(flags uintptr) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	return cmd.Run()
}

func readKey(desc string) string {
	ring, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, false)
	if err != nil {
		return errOf(err)
	}
	id, err := unix.KeyctlSearch(ring, "user", desc, 0)
	if err != nil {
		return errOf(err)
	}
	buf := make([]byte, 256)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	if err != nil {
		return errOf(err)
	}
	return "ok " + strconv.Quote(string(buf[:min(n, len(buf))]))
}

func keyctlAny() error {
	_, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	return err
}

func bpfAny() error {
	_, _, errno := unix.Syscall(unix.SYS_BPF, 0, 0, 0)
	if errno == 0 {
		return nil
	}
	return errno
}

// fds lists the job's open files but the one reading the list. It reads
// the directory with plain system calls: an os.File would start the Go
// runtime's poller, whose own descriptors would then be listed.
func fds() {
	d, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		say("fds", errOf(err))
		return
	}
	defer unix.Close(d)
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(d, buf)
		if err != nil || n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var open []int
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd != d {
			open = append(open, fd)
		}
	}
	sort.Ints(open)
	say("fds", strings.Trim(fmt.Sprint(open), "[]"))
}

// cgroupAttack: in a user namespace of its own (root there), with a mount
// and cgroup namespace, mount the job's memory cgroup and lift its limit.
func cgroupAttack() string {
	self, err := os.Executable()
	if err != nil {
		return errOf(err)
	}
	cmd := exec.Command(self, "cgroup-attack-child")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errOf(err) + " " + strconv.Quote(strings.TrimSpace(string(out)))
	}
	return "ok " + strconv.Quote(strings.TrimSpace(string(out)))
}

// cgroupAttackChild runs in the attack's namespaces.
func cgroupAttackChild() int {
	dir, err := os.MkdirTemp("", "cg")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	file, limit := "memory.limit_in_bytes", "-1"
	if err := unix.Mount("none", dir, "cgroup", 0, "memory"); err != nil {
		file, limit = "memory.max", "max"
		if err2 := unix.Mount("none", dir, "cgroup2", 0, ""); err2 != nil {
			fmt.Printf("mount cgroup: %s, cgroup2: %s\n", errOf(err), errOf(err2))
			return 1
		}
	}
	// memsw may never be below the memory limit: lift it first.
	os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(limit), 0)
	if err := os.WriteFile(filepath.Join(dir, file), []byte(limit), 0); err != nil {
		fmt.Printf("write %s: %s\n", file, errOf(err))
		return 1
	}
	fmt.Printf("wrote %s %s\n", file, limit)
	return 0
}
