#!/usr/bin/env bash
# bench/run.sh (make bench): measures tjob next to the tools one would
# otherwise use, on this machine, and writes docs/BENCHMARKS.md.
#
# It installs what it needs with apt-get (bubblewrap, runc, busybox-static,
# iputils-ping) when it runs as root on Debian, builds tjobs, tjob and the
# harness (bench/, a Go program) into a scratch directory, makes certificates
# there, and runs the harness, which starts and stops its own tjobs servers on
# loopback. Everything it starts and makes is removed on exit, failure and
# Ctrl-C included. On a cgroup v1 host, the start and scale sections remount
# the cgroup2 mount with favordynmods for a few runs, and put it back as it
# was. What the library does alone, in one process, is measured by its
# benchmarks instead: go test -bench in the repository's root.
#
# Environment: BENCH_OUT (default docs/BENCHMARKS.md), BENCH_TMPDIR (where
# the scratch directory goes, default /var/tmp), BENCH_ARGS (extra
# harness flags, e.g. "-quick" or "-only start,capture"), BENCH_BUDGET
# (default 10m: the harness stops measuring after that), GO (default go),
# BENCH_NO_VM=1 (skip the start benchmark in the cgroup v2 VM).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${BENCH_OUT:-docs/BENCHMARKS.md}
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
GO=${GO:-go}
BUDGET=${BENCH_BUDGET:-10m}
T0=$(date +%s)

log() { echo "bench: $*" >&2; }

# --- tools -------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
	log "not root: the rows that need root (jails, cgroups, runc, unshare) are skipped, and nothing is installed"
else
	need=()
	command -v bwrap >/dev/null || need+=(bubblewrap)
	command -v runc >/dev/null || need+=(runc)
	# The runc rootfs needs a static busybox.
	bbinfo=$(command -v busybox >/dev/null && ldd "$(command -v busybox)" 2>&1 || true)
	if [[ $bbinfo != *"not a dynamic"* ]]; then
		need+=(busybox-static)
	fi
	command -v ping >/dev/null || need+=(iputils-ping)
	command -v unshare >/dev/null || need+=(util-linux)
	if [ ${#need[@]} -gt 0 ]; then
		if command -v apt-get >/dev/null; then
			log "installing ${need[*]}"
			if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
				log "apt-get failed: the rows needing ${need[*]} will be skipped"
			fi
		else
			log "no apt-get: the rows needing ${need[*]} will be skipped"
		fi
	fi
fi
command -v perf >/dev/null || log "perf(1) missing: profiles of missed targets fall back to a Go CPU profile of the harness"

# --- scratch directory and cleanup ----------------------------------------
# Not under /tmp, and open to every user: the fan-out benchmark's job runs
# the harness binary from here, and tjobs gives each job a private /tmp and
# runs it as an unprivileged user of a user namespace of its own.
base=${BENCH_TMPDIR:-/var/tmp}
[ -d "$base" ] || base=/tmp
WORK=$(mktemp -d "$base/tjobbench.XXXXXX")
chmod 755 "$WORK"
BENCH_PID=
FAVOR0=$(grep -c '^cgroup2 .*favordynmods' /proc/mounts || true)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
		kill -TERM "$BENCH_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$BENCH_PID" 2>/dev/null || true
	fi
	# Servers the harness started (it kills them itself; this is for a harness
	# that was killed): only those still running our own tjobs binary.
	if [ -f "$WORK/pids" ]; then
		while read -r pid; do
			if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$WORK/bin/tjobs" ]; then
				kill -TERM "$pid" 2>/dev/null || true
				for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done <"$WORK/pids"
	fi
	# The start and scale sections set favordynmods on the cgroup2 mount for a few runs
	# and puts it back; a killed harness could not.
	if [ "$FAVOR0" = 0 ] && grep -q '^cgroup2 .*favordynmods' /proc/mounts && [ -x "$WORK/bin/tjobbench" ]; then
		log "taking favordynmods off the cgroup2 mount again (the harness was stopped before it could)"
		"$WORK/bin/tjobbench" unfavor || log "could not: remount the cgroup2 mount without favordynmods by hand"
	fi
	if [ -d "$WORK/runc-state" ] && command -v runc >/dev/null; then
		for id in $(runc --root "$WORK/runc-state" list -q 2>/dev/null); do
			runc --root "$WORK/runc-state" delete -f "$id" >/dev/null 2>&1 || true
		done
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build ---------------------------------------------------------------
log "building tjobs, tjob and the harness into $WORK/bin"
mkdir -p "$WORK/bin"
(cd service && "$GO" build -o "$WORK/bin/tjobs" ./tjobs)
(cd cli && "$GO" build -o "$WORK/bin/tjob" ./tjob)
(cd bench && "$GO" build -o "$WORK/bin/tjobbench" . && "$GO" build -o "$WORK/bin/noop" ./noop)
# The jail's init, beside the harness and tjobs, where the library finds it.
CGO_ENABLED=0 "$GO" build -o "$WORK/bin/tjob-init" ./cmd/tjob-init
"$WORK/bin/tjobs" certs -dir "$WORK/certs" >/dev/null

# --- run -----------------------------------------------------------------
log "running the harness (budget $BUDGET)"
# In the background, so that the traps run on Ctrl-C at once.
# shellcheck disable=SC2086
"$WORK/bin/tjobbench" -tjobs "$WORK/bin/tjobs" -tjob "$WORK/bin/tjob" -noop "$WORK/bin/noop" -certs "$WORK/certs" \
	-work "$WORK" -pidfile "$WORK/pids" -repo "$ROOT" -budget "$BUDGET" -out "$OUT" ${BENCH_ARGS:-} &
BENCH_PID=$!
rc=0
wait "$BENCH_PID" || rc=$?
BENCH_PID=

# --- cgroup v2, in the VM ---------------------------------------------------
if [ "$rc" -eq 0 ] && [ -z "${BENCH_NO_VM:-}" ]; then
	log "the start benchmark on cgroup v2, in the VM (BENCH_NO_VM=1 skips it)"
	bash bench/vmstart.sh >>"$OUT"
fi
log "done in $(($(date +%s) - T0)) s: $OUT"
exit "$rc"
