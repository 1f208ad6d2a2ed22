package main

// The output capture is the library's work in one process: its
// benchmarks measure it, where benchstat can compare two trees.
const captureIntro = "`dd if=/dev/zero bs=1M count=1024` (1 GiB) as a job: its stdout goes through the job's pipe into the spool file, " +
	"copied by the library, from `Run` to the final Status. Anchor: the same `dd` with `of=FILE`, in the same directory " +
	"(same file system, page cache only). No limits on either (a 20% CPU limit would measure the limit). Target: the jailed job at ≥ 80% of dd → file.\n\n" +
	"This is measured in one process, by the library's own benchmarks rather than here: " +
	"`go test -run '^$' -bench '^Benchmark(Capture|SpoolCopy)$' -benchtime 1x -count 7 .` as root in the repository's root. " +
	"BenchmarkCapture (output_test.go) gives `file`, the anchor, and `job/jail` and `job/nojail`, the jobs, in MB/s; " +
	"BenchmarkSpoolCopy (output_bench_test.go) takes that apart: the spool's copier alone on the same pipe (`spool`), " +
	"the pipe spliced into the file (`splice`), and a shell's `dd | cat > FILE` (`shell`). " +
	"Run them in two trees and compare with benchstat."
