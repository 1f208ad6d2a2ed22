#!/usr/bin/env bash
# hack/reliability-doc.sh: runs the reliability and security suite (faults, bad input, load, attacks)
# and writes docs/RELIABILITY.md from what it printed: every case's
# "RELIABILITY: <section>: <case>: <result>" line, on this host (with -race)
# and, when qemu is here, in the cgroup v2 test VM; the status of the older
# tests that cover the rest of the issue; known bugs (tests skipped until
# fixed); and a short run of each fuzz target. Run as root, from anywhere:
#
#   bash hack/reliability-doc.sh              # host, VM, fuzz
#   RELIABILITY_VM=0 bash hack/reliability-doc.sh
#   TJOB_SOAK=1 bash hack/reliability-doc.sh  # the long versions on the host
#   RELIABILITY_FROM=DIR bash hack/reliability-doc.sh
#                                             # reuse DIR/host.log, DIR/vm.log
#                                             # and DIR/fuzz.log: no run; a
#                                             # DIR/soak.log (make soak's
#                                             # output) adds its section
#
# Exits 1 when a test failed (the document says which); the document is
# written either way. The raw logs stay in the directory it names.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

OUT=docs/RELIABILITY.md
mkdir -p docs
FUZZTIME=${FUZZTIME:-10s}
logs=${RELIABILITY_FROM:-$(mktemp -d /tmp/tjob-reliability.XXXXXX)}

# Older tests that cover the rest of reliability and security, by package, with what they show.
lib_tests='TestStartFailures TestInvalidLimits TestStopIgnoringTerm TestJailLeavesNothing TestFaultHugeLine TestFaultClosesStdout TestFaultSpoolFull TestFaultOwnerKilled TestCgroupMemoryLimitOOM TestCgroupPidsMaxForkBomb TestJailProcIsItsOwn TestJailNetworkIsLoopbackOnly TestJailMasks TestJailHardening TestJailMountsStayInside'
svc_tests='TestRunErrors TestPrefix TestTLSRefused TestNoCommonName TestIsolation TestMasked TestFollowers TestFollowerLeaves TestShutdown'
cli_tests='TestErrors TestOtherUser TestPrefixes'
declare -A covers=(
	[TestStartFailures]="bad input: missing, relative, non-executable and directory commands, bad Dir, empty command, NUL (library)"
	[TestInvalidLimits]="bad input: negative limits (library)"
	[TestStopIgnoringTerm]="fault: a job ignoring SIGTERM is killed after the grace (library)"
	[TestJailLeavesNothing]="fault: daemons are gone after the job ends (library)"
	[TestFaultHugeLine]="fault: 100 MiB without a newline (library)"
	[TestFaultClosesStdout]="fault: a job closes stdout and keeps running (library)"
	[TestFaultSpoolFull]="fault: the spool file system fills up (library)"
	[TestFaultOwnerKilled]="fault: the job's owner killed with SIGKILL: the job does not survive (library)"
	[TestCgroupMemoryLimitOOM]="fault: over its memory: OOMKilled, Exited (137) (out of memory) (library)"
	[TestCgroupPidsMaxForkBomb]="fault: fork bomb held to PidsMax (library)"
	[TestJailProcIsItsOwn]="security: a job sees only its own processes (library)"
	[TestJailNetworkIsLoopbackOnly]="security: a job sees only loopback (library)"
	[TestJailMasks]="security: masked paths and the spool are hidden from a job (library)"
	[TestJailHardening]="security: no_new_privs, no CAP_SYS_ADMIN or CAP_SYS_MODULE, no remount of / (library)"
	[TestJailMountsStayInside]="security: a job cannot mount; the jail's mounts stay inside (library)"
	[TestRunErrors]="bad input: Run errors over the API (server)"
	[TestPrefix]="bad input: ambiguous and unknown prefixes (server)"
	[TestTLSRefused]="security: the mTLS matrix: no client certificate, another CA, expired, a server-auth certificate as a client, TLS 1.2 (server)"
	[TestNoCommonName]="security: a certificate without a CN (server)"
	[TestIsolation]="security: another user's job answers exactly like a missing one (server)"
	[TestMasked]="security: a job cannot read the server's keys or another job's output (server)"
	[TestFollowers]="load: 50 followers of one job get identical bytes (server)"
	[TestFollowerLeaves]="fault: a follower that leaves frees its stream (server)"
	[TestShutdown]="fault: shutdown leaves no process, cgroup or output (server)"
	[TestErrors]="bad input: CLI errors: missing certificate files, no server, another CA (CLI)"
	[TestOtherUser]="security: another user's jobs through the CLI (CLI)"
	[TestPrefixes]="bad input: ambiguous and unknown prefixes through the CLI (CLI)"
)
alt() { echo "$*" | tr ' ' '|'; }
lib_run="^(TestSecurity.*|$(alt $lib_tests))\$"
svc_run="^(TestReliability.*|TestSecurity.*|$(alt $svc_tests))\$"
cli_run="^(TestReliability.*|TestSecurity.*|$(alt $cli_tests))\$"
vm_run="^(TestReliability.*|TestSecurity.*|$(alt $lib_tests $svc_tests $cli_tests))\$"

failed=0
if [ -z "${RELIABILITY_FROM:-}" ]; then
	[ "$(id -u)" = 0 ] || echo "reliability-doc: not root: most cases will skip" >&2
	echo "reliability-doc: host tests (logs in $logs)"
	: >"$logs/host.log"
	for spec in ".|$lib_run" "service/server|$svc_run" "cli/e2e|$cli_run"; do
		dir=${spec%%|*}
		run=${spec#*|}
		echo "== go test -race -v -run '$run' ./$dir" >>"$logs/host.log"
		(cd "$dir" && go test -race -count=1 -timeout 20m -v -run "$run" .) >>"$logs/host.log" 2>&1 || failed=1
	done
	echo "reliability-doc: fuzz targets, $FUZZTIME each"
	: >"$logs/fuzz.log"
	for spec in ".|FuzzOutput" "service/server|FuzzLookup" "cli/tjob|FuzzParseArgs"; do
		dir=${spec%%|*}
		fz=${spec#*|}
		echo "== $fz ./$dir" >>"$logs/fuzz.log"
		(cd "$dir" && go test -run '^$' -fuzz "^$fz\$" -fuzztime "$FUZZTIME" .) >>"$logs/fuzz.log" 2>&1 || failed=1
	done
	if [ "${RELIABILITY_VM:-1}" != 0 ] && command -v qemu-system-x86_64 >/dev/null; then
		echo "reliability-doc: the same in the cgroup v2 VM"
		VMTEST_PKGS=". service/server cli/e2e" VMTEST_RUN="$vm_run" bash test/vm/run.sh >"$logs/vm.log" 2>&1 || failed=1
	fi
fi

# --- the document --------------------------------------------------------
md() { sed 's/|/\\|/g'; } # a table cell
cases() { # cases LOG: the RELIABILITY lines as table rows, by section
	local log=$1 section
	for section in "bad input" "fault" "load" "security"; do
		grep -a "RELIABILITY: $section: " "$log" | sed 's/.*RELIABILITY: //' | tr -d '\r' >"$logs/rows" || true
		[ -s "$logs/rows" ] || continue
		echo
		echo "#### ${section^}"
		echo
		echo "| case | result |"
		echo "| --- | --- |"
		while IFS= read -r line; do
			rest=${line#"$section: "}
			item=${rest%%: *}
			result=${rest#*: }
			printf '| %s | %s |\n' "$(md <<<"$item")" "$(md <<<"$result")"
		done <"$logs/rows"
	done
}
status_of() { # status_of LOG TEST: PASS, FAIL, SKIP or "not run"
	local s
	s=$(grep -a -E -- "^--- (PASS|FAIL|SKIP): $2 " "$1" | tail -1 | awk '{print $2}' | tr -d ':' || true)
	echo "${s:-not run}"
}
failures() { # failures LOG: the tests that failed
	grep -a -E -- '^ *--- FAIL: ' "$1" | sed -E 's/^ *--- FAIL: ([^ ]+).*/\1/' | sort -u || true
}
known_bugs() { # known_bugs LOG
	grep -a -o 'known bug: .*' "$1" | sort -u || true
}
vm_ran=
[ -s "$logs/vm.log" ] && grep -aq 'VMTEST-RESULT' "$logs/vm.log" && vm_ran=1

commit=$(git rev-parse --short HEAD)
dirty=
git diff --quiet HEAD -- . ':!docs' ':!tmp' 2>/dev/null || dirty=" (with uncommitted changes)"
cgroups=$(if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo "v2"; elif [ -d /sys/fs/cgroup/unified ]; then echo "hybrid (v1 controllers)"; else echo "v1"; fi)
{
	echo "# Reliability and security"
	echo
	echo "Generated by \`hack/reliability-doc.sh\` from the test output of a run on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty."
	echo "**Do not edit by hand**: run the script again. It runs the reliability and security suite (files \`security_test.go\`,"
	echo "\`service/server/reliability_test.go\`, \`service/server/fuzz_test.go\`, \`cli/e2e/reliability_test.go\`,"
	echo "\`cli/e2e/security_test.go\`, \`cli/tjob/fuzz_test.go\`) and the older tests that cover the rest of the issue;"
	echo "every case prints one \`RELIABILITY: <section>: <case>: <result>\` line, and each row below is one such line as printed."
	echo "\`make test\` runs the same tests (smaller in the VM); \`TJOB_SOAK=1\` runs the long versions (5,000 disconnects,"
	echo "250 stalled streams a kind, five rounds of the load, 3,000 sleeping jobs, 20,000 short jobs with \`-retain 1000\`)."
	echo
	echo "## On the host: Linux $(uname -r), cgroups $cgroups, $(nproc) CPUs, \`go test -race\`"
	if [ -n "${TJOB_SOAK:-}" ]; then echo; echo "With \`TJOB_SOAK=$TJOB_SOAK\`."; fi
	cases "$logs/host.log"
	if [ -n "$vm_ran" ]; then
		echo
		echo "## In the test VM: cgroup v2, qemu TCG, 2 CPUs, 2 GiB, no -race (scaled down)"
		cases "$logs/vm.log"
	fi
	if [ -s "$logs/soak.log" ]; then
		echo
		echo "## The soak (\`make soak\`, \`TJOB_SOAK=1\`) on the host"
		echo
		echo "From the output of \`make soak\` (or of some of its tests) saved as soak.log beside the other logs."
		cases "$logs/soak.log"
	fi
	echo
	echo "## Known bugs"
	echo
	echo "Tests that show a bug not fixed yet skip with \"known bug: ...\"; this lists them."
	echo
	bugs=$( (known_bugs "$logs/host.log"; [ -z "$vm_ran" ] || known_bugs "$logs/vm.log") | sort -u)
	if [ -n "$bugs" ]; then sed 's/^known bug: /- /' <<<"$bugs"; else echo "None."; fi
	echo
	echo "## Failures"
	echo
	f=$( (failures "$logs/host.log" | sed 's/$/ (host)/'; [ -z "$vm_ran" ] || failures "$logs/vm.log" | sed 's/$/ (VM)/') )
	if [ -n "$f" ]; then sed 's/^/- /' <<<"$f"; else echo "None."; fi
	echo
	echo "## Also covered by the older tests"
	echo
	echo "| test | what it shows | host | VM |"
	echo "| --- | --- | --- | --- |"
	for t in $lib_tests $svc_tests $cli_tests; do
		vm="not run"
		[ -z "$vm_ran" ] || vm=$(status_of "$logs/vm.log" "$t")
		printf '| `%s` | %s | %s | %s |\n' "$t" "$(md <<<"${covers[$t]}")" "$(status_of "$logs/host.log" "$t")" "$vm"
	done
	if [ -s "$logs/fuzz.log" ]; then
		echo
		echo "## Fuzz targets"
		echo
		echo "| target | what it checks | run |"
		echo "| --- | --- | --- |"
		for spec in "FuzzOutput|the output spool's readers give back every byte written" \
			"FuzzLookup|job-ID resolution never answers another user's job; NotFound, ambiguity and errors as documented" \
			"FuzzParseArgs|the CLI's argument parsing: help, usage errors, \`run\` takes its command verbatim"; do
			fz=${spec%%|*}
			what=${spec#*|}
			res=$(awk -v fz="$fz" '/^== /{cur=$2} cur==fz' "$logs/fuzz.log" | grep -a -E '^(fuzz: elapsed|PASS|FAIL|--- FAIL)' | tail -2 | tr '\n' ' ' | sed 's/ *$//')
			printf '| `%s` | %s | %s |\n' "$fz" "$(md <<<"$what")" "$(md <<<"${res:-not run}")"
		done
	fi
} >"$OUT"
echo "reliability-doc: wrote $OUT (logs in $logs)"
if grep -aq -- '--- FAIL' "$logs/host.log" || { [ -n "$vm_ran" ] && grep -aq -- '--- FAIL' "$logs/vm.log"; }; then
	failed=1
fi
exit $failed
