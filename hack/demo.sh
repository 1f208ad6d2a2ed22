#!/usr/bin/env bash
# hack/demo.sh (make demo): the whole system in one command, as root.
#
# Installs what a bare Debian machine lacks, builds tjobs and tjob into bin/,
# makes certificates for the users "cli" and "bob" in .tjob/ (kept when they
# exist), starts tjobs, walks through the design RFD's examples, shows that bob cannot
# see cli's jobs, and shuts the server down. Exits non-zero if a step does
# not do what it should.
#
# TJOB_ADDR changes where the server listens (default localhost:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

ADDR=${TJOB_ADDR:-localhost:8080}
LOG=.tjob/demo-tjobs.log

if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' red=$'\e[31m' off=$'\e[0m'; else bold= dim= red= off=; fi
say() { printf '\n%s# %s%s\n' "$dim" "$*" "$off"; }
show() { printf '%s$ %s%s\n' "$bold" "$*" "$off"; }
fail() {
	printf '%sdemo: FAILED: %s%s\n' "$red" "$*" "$off" >&2
	[ -f "$LOG" ] && { echo "--- tjobs log:" >&2; tail -20 "$LOG" >&2; }
	exit 1
}
# step CMD...: show CMD, run it, fail the demo if it fails.
step() {
	show "$*"
	"$@" || fail "'$*' exited $?"
}
# capture VAR CMD...: show CMD, run it, print and keep its output in VAR.
capture() {
	local var=$1
	shift
	show "$*"
	local _out
	_out=$("$@") || fail "'$*' exited $?"
	printf '%s\n' "$_out"
	printf -v "$var" '%s' "$_out"
}

[ "$(id -u)" = 0 ] || fail "run me as root: jobs get namespaces and cgroups of their own"

say "What a bare machine lacks"
if ! command -v ping >/dev/null; then
	show "apt-get install -y iputils-ping"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-ping >/dev/null || fail "cannot install ping"
fi
command -v go >/dev/null || fail "go is not installed"
echo "ok: ping, go"

say "Build the server (tjobs), the jail's init it runs (tjob-init) and the CLI (tjob) into bin/"
mkdir -p bin
step go build -C service -o ../bin/tjobs ./tjobs
step env CGO_ENABLED=0 go build -o bin/tjob-init ./cmd/tjob-init
step go build -C cli -o ../bin/tjob ./tjob
export PATH=$PWD/bin:$PATH

say "Certificates in .tjob/: a CA, the server, and the users cli and bob"
step tjobs certs bob

say "Start the server: it logs one line per call to $LOG"
show "tjobs -addr $ADDR &"
tjobs -addr "$ADDR" 2>"$LOG" &
SERVER=$!
cleanup() {
	if kill -0 "$SERVER" 2>/dev/null; then
		kill -TERM "$SERVER" 2>/dev/null || true
		wait "$SERVER" 2>/dev/null || true
	fi
}
trap cleanup EXIT
for _ in $(seq 50); do
	grep -q "listening on" "$LOG" 2>/dev/null && break
	kill -0 "$SERVER" 2>/dev/null || fail "tjobs exited"
	sleep 0.1
done
grep -q "listening on" "$LOG" || fail "tjobs did not start"
cat "$LOG"

# Every tjob command below talks to $ADDR as the user "cli" (.tjob/cli.crt).
tjob() { command tjob "$1" -addr "$ADDR" "${@:2}"; }

say "Run a job: tjob prints its ID"
capture hello tjob run echo hello
sleep 0.5
step tjob ps -a

say "Its output, from the start"
capture out tjob logs "$hello"
[ "$out" = hello ] || fail "logs printed '$out', not 'hello'"

say "A job that goes on: follow its output for 3 seconds (Ctrl-C ends 'logs -f')"
capture ping tjob run ping 127.0.0.1
show "timeout -s INT 3 tjob logs -f ${ping:0:8}"
rc=0
timeout -s INT 3 tjob logs -addr "$ADDR" -f "${ping:0:8}" >.tjob/demo-ping.out || rc=$?
cat .tjob/demo-ping.out
# timeout says 124 when it sent the signal; tjob itself exits 130 on SIGINT.
[ "$rc" = 124 ] || [ "$rc" = 130 ] || fail "logs -f exited $rc"
grep -q "bytes from 127.0.0.1" .tjob/demo-ping.out || fail "no ping replies in the output"

step tjob ps

say "Stop it: SIGTERM, then SIGKILL after the grace period"
step tjob stop "${ping:0:8}"
capture table tjob ps -a
grep -q "Exited (0)" <<<"$table" || fail "echo hello is not 'Exited (0)'"
[ "$(grep -c Exited <<<"$table")" = 2 ] || fail "ps -a does not show both jobs exited"

say "bob, another user, sees none of cli's jobs"
capture table tjob ps -a -cert .tjob/bob.crt -key .tjob/bob.key
[ "$(wc -l <<<"$table")" = 1 ] || fail "bob sees jobs"
show "tjob logs -cert .tjob/bob.crt -key .tjob/bob.key $hello"
rc=0
err=$(tjob logs -cert .tjob/bob.crt -key .tjob/bob.key "$hello" 2>&1) || rc=$?
printf '%s\n' "$err"
[ "$rc" = 1 ] && grep -q "no such job" <<<"$err" || fail "bob read cli's job (exit $rc)"

say "Shut the server down: it stops every job and keeps their records and output for its next start"
show "kill -TERM %tjobs; wait"
kill -TERM "$SERVER"
rc=0
wait "$SERVER" || rc=$?
trap - EXIT
tail -4 "$LOG"
[ "$rc" = 0 ] || fail "tjobs exited $rc"

printf '\n%sdemo: all steps passed%s\n' "$bold" "$off"
