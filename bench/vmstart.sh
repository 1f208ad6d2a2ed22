#!/usr/bin/env bash
# bench/vmstart.sh: prints the section of docs/BENCHMARKS.md on start
# latency on cgroup v2: the library's BenchmarkStart in the VM of make
# vmtest, where a job is born in its cgroup, with busybox's unshare and the
# host's bwrap in the same guest. The guest's CPUs are emulated (TCG):
# compare the ratios, not the times. bench/run.sh appends it to its report.
set -euo pipefail
cd "$(dirname "$0")/.."

echo
echo "## Start latency on cgroup v2 (make vmbench)"
echo
echo "\`BenchmarkStart\` (start_test.go) in the VM of \`make vmtest\`: Debian's cloud kernel on cgroup v2, 2 emulated CPUs (qemu TCG, several times slower than the host), /bin/true each time, the jail's init the \`tjob-init\` tjobs runs. \`as-tjobs\` is the target row: a user namespace, a read-only root, a workspace and limits, with \`clone3(CLONE_INTO_CGROUP)\`."
echo
if [ "$(id -u)" -ne 0 ] || ! command -v qemu-system-x86_64 >/dev/null; then
	echo "Not measured here: needs root and qemu-system-x86_64 (apt-get install qemu-system-x86; .ci/run installs it)."
	exit 0
fi
if ! out=$(VMTEST_PKGS=. VMTEST_RUN='^$' VMTEST_BENCH='^BenchmarkStart$' bash test/vm/run.sh 2>&1); then
	echo "The VM run failed; its last lines:"
	echo
	echo '```'
	tail -15 <<<"$out" | tr -d '\r'
	echo '```'
	exit 0
fi
echo "| start of /bin/true | N | ms per start | ratio to unshare | ratio to bwrap |"
echo "| --- | --- | --- | --- | --- |"
tr -d '\r' <<<"$out" | awk '
	/^BenchmarkStart\// && $4 == "ns/op" {
		name = $1; sub(/^BenchmarkStart\//, "", name); sub(/-[0-9]+$/, "", name)
		n[++k] = name; runs[name] = $2; ms[name] = $3 / 1e6
	}
	END {
		for (i = 1; i <= k; i++) {
			m = n[i]
			u = ("unshare" in ms) ? sprintf("%.2f×", ms[m] / ms["unshare"]) : "—"
			b = ("bwrap" in ms) ? sprintf("%.2f×", ms[m] / ms["bwrap"]) : "—"
			printf "| %s | %d | %.2f | %s | %s |\n", m, runs[m], ms[m], u, b
		}
	}'
skipped=$(tr -d '\r' <<<"$out" | grep -o 'bwrap cannot run here: .*' | head -1 || true)
if [ -n "$skipped" ]; then
	echo
	echo "No bwrap row: $skipped."
fi
