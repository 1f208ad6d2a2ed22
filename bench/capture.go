package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// The output capture is the library's work in one process: its own
// benchmarks measure it, where benchstat can compare two trees, and this
// section runs them and reports their figures.
const captureIntro = "`dd if=/dev/zero bs=1M count=1024` (1 GiB) as a job: its stdout goes through the job's pipe into the spool file, " +
	"copied by the library, from `Run` to the final Status. Anchor: the same `dd` with `of=FILE`, in the same directory " +
	"(same file system, page cache only). No limits on either (a 20% CPU limit would measure the limit). Target: the jailed job at or above a shell's " +
	"`dd | cat > FILE`, the pipe design's own bound: every byte crosses a pipe and is copied again into the file, where dd → file copies it once.\n\n" +
	"The library's own benchmarks measure it, in one process, and this section runs them: " +
	"`go test -run '^$' -bench '^Benchmark(Capture|SpoolCopy)$' -benchtime 1x -count 7 .` as root in the repository's root, " +
	"whose runs take turns by sub-benchmark. BenchmarkCapture (output_test.go) gives `file`, the anchor, and `job/jail` and `job/nojail`, the jobs; " +
	"BenchmarkSpoolCopy (output_bench_test.go) takes that apart: the spool's copier alone on the same pipe (`spool`), " +
	"the pipe spliced into the file (`splice`), and a shell's `dd | cat > FILE` (`shell`). " +
	"To compare two trees, run the same command in each and compare with benchstat."

// captureRuns are the sub-benchmarks the section reports, in order, with
// what each is.
var captureRuns = []struct{ name, what string }{
	{"BenchmarkCapture/file", "dd of=FILE (anchor)"},
	{"BenchmarkCapture/job/nojail", "tjob job, no jail: dd's stdout into the spool"},
	{"BenchmarkCapture/job/jail", "tjob job in the library's default jail: dd's stdout into the spool"},
	{"BenchmarkSpoolCopy/spool", "the spool's copier alone, dd's pipe into the file, no job"},
	{"BenchmarkSpoolCopy/splice", "the pipe spliced into the file (splice(2)), no job"},
	{"BenchmarkSpoolCopy/shell", "`sh -c 'dd | cat > FILE'`"},
}

func sectionCapture(ctx context.Context, e *env, s *section) error {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "test", "-run", "^$", "-bench", "^Benchmark(Capture|SpoolCopy)$",
		"-benchtime", "1x", "-count", strconv.Itoa(e.runs(7, 1)), ".")
	cmd.Dir = e.repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench: %v: %s", err, lastLines(out, 5))
	}
	mbps := parseMBps(out)
	med := func(name string) float64 { return summarize(mbps[name]).med }
	file, shell := med(captureRuns[0].name), med(captureRuns[5].name)
	for _, c := range captureRuns {
		xs := mbps[c.name]
		if len(xs) == 0 {
			s.skipRow(c.what, "no result from go test")
			continue
		}
		r := &row{what: c.what, unit: "MB/s"}
		if c.name != captureRuns[0].name {
			r.anchor, r.ratio = "dd of=FILE", pct(summarize(xs).med/file)+" of dd → file"
		}
		s.add(fromStats(r, summarize(xs), "min–max"))
	}
	if jail := mbps[captureRuns[2].name]; len(jail) > 0 {
		st := summarize(jail)
		s.add(fromStats(&row{what: "tjob job in the jail vs `dd | cat > FILE`", unit: "MB/s", anchor: fmt.Sprintf("shell %.0f MB/s", shell),
			ratio: ratioX(st.med / shell), target: "≥ the shell's", met: yesNo(st.med >= shell)}, st, "min–max"))
	}
	return nil
}

// parseMBps reads go test's benchmark lines, "BenchmarkX/sub-2 1 N ns/op
// M MB/s", into MB/s by benchmark name, without the -GOMAXPROCS suffix.
func parseMBps(out []byte) map[string][]float64 {
	res := map[string][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		for i := 1; i+1 < len(f); i++ {
			if f[i+1] == "MB/s" {
				if v, err := strconv.ParseFloat(f[i], 64); err == nil {
					res[name] = append(res[name], v)
				}
			}
		}
	}
	return res
}

// lastLines is the end of a command's output, for an error.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
