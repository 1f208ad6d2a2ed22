package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// addProfile adds to s, under title, where the CPU goes during one more run
// of something that missed its target; or a note of why it could not.
func (e *env) addProfile(ctx context.Context, s *section, name, title string, target []string, during func() error) {
	text, err := e.profile(ctx, name, target, during)
	if err != nil {
		s.note("%s failed: %v", title, err)
		return
	}
	s.profiles = append(s.profiles, profileText{title, text})
}

// profile records where the CPU goes while during runs: with perf(1) when
// it is here (target: "-a" for the whole machine, or "-p PID"), which sees
// the kernel as well as Go; otherwise a Go CPU profile of this process.
// It returns the hottest symbols, as text for the report.
func (e *env) profile(ctx context.Context, name string, target []string, during func() error) (string, error) {
	if e.perf == "" {
		return e.pprofProfile(name, during)
	}
	data := filepath.Join(e.work, "perf-"+name+".data")
	args := append([]string{"record", "-F", "999", "-g", "-o", data, "--quiet"}, target...)
	rec := exec.Command(e.perf, args...)
	var recErr strings.Builder
	rec.Stderr = &recErr
	if err := rec.Start(); err != nil {
		return "", err
	}
	time.Sleep(300 * time.Millisecond) // let perf attach
	derr := during()
	rec.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- rec.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		rec.Process.Kill()
		<-done
	}
	if derr != nil {
		return "", derr
	}
	out, err := exec.CommandContext(ctx, e.perf, "report", "-i", data, "--stdio", "--no-children",
		"--sort", "comm,dso,sym", "-g", "none", "--percent-limit", "1").Output()
	if err != nil {
		return "", fmt.Errorf("perf report: %v (%s)", err, strings.TrimSpace(recErr.String()))
	}
	// Inclusive: which callers the time is under.
	incl, err := exec.CommandContext(ctx, e.perf, "report", "-i", data, "--stdio", "--children",
		"--sort", "comm,sym", "-g", "none", "--percent-limit", "4").Output()
	if err != nil {
		return "", fmt.Errorf("perf report --children: %v", err)
	}
	os.Remove(data)
	return "perf record -F 999 -g " + strings.Join(target, " ") + "\n\nSelf time: perf report --no-children --sort comm,dso,sym (top 30, ≥ 1%)\n\n" +
		topLines(out, 30, nil) + "\n\nInclusive time (callers included): perf report --children --sort comm,sym (top 40 Go functions, ≥ 4%)\n\n" +
		topLines(incl, 40, func(l string) bool { return strings.Contains(l, "[.]") && !strings.Contains(l, "runtime.goexit") }), nil
}

func topLines(out []byte, n int, keep func(string) bool) string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" || (keep != nil && !keep(l)) {
			continue
		}
		lines = append(lines, strings.TrimRight(l, " "))
		if len(lines) == n {
			break
		}
	}
	return strings.Join(lines, "\n")
}

// pprofProfile is the fallback: a Go CPU profile of this process only.
func (e *env) pprofProfile(name string, during func() error) (string, error) {
	file := filepath.Join(e.work, "cpu-"+name+".pprof")
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return "", err
	}
	derr := during()
	pprof.StopCPUProfile()
	f.Close()
	if derr != nil {
		return "", derr
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", e.self, file).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v", err)
	}
	return "Go CPU profile of the harness process (perf(1) is missing, so the kernel and other processes are not seen)\n\n" + string(out), nil
}
