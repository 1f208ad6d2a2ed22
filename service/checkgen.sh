#!/usr/bin/env bash
# Fails when the committed Go code in service/proto is not what gen.sh makes
# from tjob.proto now. Run by `make test`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$here/gen.sh" "$tmp"

# The header names the protoc that made the code; another protoc release with
# the same output is not stale code, so that one line is left out.
strip() { grep -Ev '^// (	|- )protoc  ' "$1"; }
stale=0
for f in tjob.pb.go tjob_grpc.pb.go; do
	committed=$here/proto/tjob/v1/$f
	fresh=$tmp/proto/tjob/v1/$f
	if [ ! -f "$committed" ]; then
		echo "checkgen: proto/tjob/v1/$f is missing: run service/gen.sh" >&2
		stale=1
	elif ! diff -u <(strip "$committed") <(strip "$fresh") >"$tmp/$f.diff"; then
		echo "checkgen: proto/tjob/v1/$f is stale: run service/gen.sh and commit" >&2
		head -40 "$tmp/$f.diff" >&2
		stale=1
	fi
done
[ "$stale" = 0 ] && echo "checkgen: generated code is current"
exit "$stale"
