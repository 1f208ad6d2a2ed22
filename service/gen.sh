#!/usr/bin/env bash
# Regenerates the Go code for service/proto/tjob/v1/tjob.proto.
#
#   service/gen.sh [OUTDIR]
#
# OUTDIR defaults to the service module itself; checkgen.sh passes a scratch
# directory. protoc comes from Debian (protobuf-compiler, with the well-known
# types from libprotobuf-dev) and is installed when missing; the two plugins
# are installed with `go install` at the versions pinned below, into a cache
# folder of their own, so the code is the same on every machine.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12     # google.golang.org/protobuf
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}

if ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
	echo "gen.sh: installing protoc (protobuf-compiler, libprotobuf-dev)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq protobuf-compiler libprotobuf-dev >&2
fi

bin=${TJOB_PROTOC_PLUGINS:-${XDG_CACHE_HOME:-$HOME/.cache}/tjob/protoc-plugins}
plugin_ok() { # NAME VERSION: is the pinned version installed?
	[ -x "$bin/$1" ] && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]
}
install_plugin() { # NAME MODULE_PATH VERSION
	plugin_ok "$1" "$3" && return 0
	mkdir -p "$bin"
	(cd "$here" && GOWORK=off GOBIN="$bin" go install "$2@$3")
	echo "$3" >"$bin/$1.version"
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

mkdir -p "$out"
cd "$here"
PATH="$bin:$PATH" protoc \
	-I proto -I /usr/include \
	--go_out="$out" --go_opt=module=github.com/neildo/tjob/service \
	--go-grpc_out="$out" --go-grpc_opt=module=github.com/neildo/tjob/service \
	proto/tjob/v1/tjob.proto
