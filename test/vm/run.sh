#!/usr/bin/env bash
# test/vm/run.sh: boot a small Linux VM with cgroup v2 (qemu, software
# emulation) and run tjob's Go test binaries inside it as root.
# Streams the guest console to stdout and exits with the tests' status:
# 0 all passed, 1 a test failed or the guest hung/crashed, 2 setup error.
# See test/vm/README.md.
#
# Knobs (environment):
#   VMTEST_PKGS="test/vm/selftest service/..."  package dirs, relative to
#                                the repo ("dir/..." = subtree); default all
#   VMTEST_RUN=regexp            passed to every test binary as -test.run
#   VMTEST_SKIP=regexp           passed to every test binary as -test.skip
#   VMTEST_TEST_TIMEOUT=12m      -test.timeout of each test binary
#   VMTEST_TIMEOUT=1800          seconds before the guest is killed
#   VMTEST_SELFCHECK_BREAK=1     the selftest sets a useless io.max: must fail
#   VMTEST_BENCH=regexp          passed as -test.bench (with VMTEST_RUN='^$'
#                                to run benchmarks only); bwrap, when the
#                                host has it, is copied in with its libraries
#   VMTEST_BENCHTIME=20x         -test.benchtime of the benchmarks
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/test/vm
CACHE=$REPO/.cache/vm # kept: .debs, unpacked kernel and busybox, console.log
WORK=$HERE/work       # rebuilt every run: initramfs tree, disk image
LOG=$CACHE/console.log
TEST_TIMEOUT=${VMTEST_TEST_TIMEOUT:-12m}
TIMEOUT=${VMTEST_TIMEOUT:-1800}
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk"

say() { echo "vmtest: $*"; }
die() { echo "vmtest: error: $*" >&2; exit 2; }

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/lock"
flock 9 # one run at a time per checkout

# --- host tools (Debian packages) -----------------------------------------
apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return
	say "apt-get update"
	apt-get update -qq
	apt_updated=1
}
need() { # need COMMAND PACKAGE: apt-get install PACKAGE unless COMMAND exists
	command -v "$1" >/dev/null && return
	apt_update
	say "installing $2"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need qemu-system-x86_64 qemu-system-x86
need mkfs.ext4 e2fsprogs
need cpio cpio
command -v go >/dev/null || die "go is not installed"

# --- kernel and busybox: downloaded .debs, unpacked, never installed ------
fetch() { # fetch PACKAGE DIR: apt-get download PACKAGE, dpkg -x it into DIR
	apt_update
	say "downloading $1"
	(cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$1")
	rm -rf "$2.tmp"
	dpkg -x "$(ls -t "$CACHE/debs/$1"_*.deb | head -1)" "$2.tmp"
	mv "$2.tmp" "$2"
}
if [ ! -d "$CACHE/kernel" ]; then
	apt_update
	# a metapackage: fetch the versioned image it points at
	kpkg=$(apt-cache depends linux-image-cloud-amd64 |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
	[ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64"
	fetch "$kpkg" "$CACHE/kernel"
fi
[ -d "$CACHE/busybox" ] || fetch busybox-static "$CACHE/busybox"
KVER=$(ls "$CACHE/kernel/lib/modules" | head -1)
VMLINUZ=$CACHE/kernel/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "no kernel in $CACHE/kernel (rm -rf it to refetch)"

# --- the guest's root file system ------------------------------------------
R=$WORK/root
rm -rf "$WORK"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,mnt/disk,lib/modules}
mkdir -p "$R"/vmtest/{bin,src}
cp "$CACHE/busybox/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list-full); do
	[ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$R/$applet" # bin/sh, usr/bin/env, ...
done
install -m 755 "$HERE/init" "$R/init"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
printf '127.0.0.1 localhost vmtest\n::1 localhost\n' >"$R/etc/hosts"
echo 'hosts: files' >"$R/etc/nsswitch.conf"

for m in $MODULES; do # decompressed here: busybox insmod takes plain .ko
	ko=$(find "$CACHE/kernel/lib/modules/$KVER" -name "$m.ko*" | head -1)
	case $ko in
	"") say "no module $m (built in?)" ;;
	*.xz) need xz xz-utils && xz -dc "$ko" >"$R/lib/modules/$m.ko" ;;
	*.zst) need zstd zstd && zstd -dqc "$ko" >"$R/lib/modules/$m.ko" ;;
	*.gz) gzip -dc "$ko" >"$R/lib/modules/$m.ko" ;;
	*) cp "$ko" "$R/lib/modules/$m.ko" ;;
	esac
done

# --- test binaries: static, one per package with tests, in its package dir --
selected() { # selected DIR: does VMTEST_PKGS choose package dir DIR?
	[ -z "${VMTEST_PKGS:-}" ] && return 0
	local p
	for p in $VMTEST_PKGS; do
		p=${p#./}
		p=${p%/}
		case $p in
		... | "") return 0 ;;
		*/...) [[ $1 == "${p%/...}" || $1 == "${p%/...}"/* ]] && return 0 ;;
		*) [[ $1 == "$p" ]] && return 0 ;;
		esac
	done
	return 1
}
pkgdirs=$(for mod in . service cli; do
	[ -f "$REPO/$mod/go.mod" ] || continue
	(cd "$REPO/$mod" && go list -e -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' ./...) || exit
done | sed "s|^$REPO/*||; s|^\$|.|" | sort -u) || die "cannot list the packages (go list)"

export CGO_ENABLED=0 # static binaries; so no -race (it needs cgo)
: >"$R/vmtest/tests"
bins= # build tjobs and tjob? For a full run, or for tests that use them.
[ -z "${VMTEST_PKGS:-}" ] && bins=1
for dir in $pkgdirs; do
	selected "$dir" || continue
	case $dir in service | service/* | cli | cli/*) bins=1 ;; esac
	grep -qs TJOB_BIN_DIR "$REPO/$dir"/*.go && bins=1
	name=${dir##*/}.test
	[ "$dir" = . ] && name=tjob.test
	say "building $dir/$name"
	mkdir -p "$R/vmtest/src/$dir"
	(cd "$REPO/$dir" && go test -c -o "$R/vmtest/src/$dir/$name" .) ||
		die "cannot build the tests of $dir"
	[ ! -d "$REPO/$dir/testdata" ] || cp -a "$REPO/$dir/testdata" "$R/vmtest/src/$dir/"
	echo "$dir $name" >>"$R/vmtest/tests"
done
[ -s "$R/vmtest/tests" ] || die "no test packages selected (VMTEST_PKGS=${VMTEST_PKGS:-})"
# The probe that security tests run as a job (see internal/testkit.Probe).
say "building tjob-probe"
(cd "$REPO" && go build -o "$R/vmtest/bin/tjob-probe" ./test/probe) || die "cannot build test/probe"
if [ -n "$bins" ] && compgen -G "$REPO/service/tjobs/*.go" >/dev/null; then
	say "building tjobs and tjob-init"
	(cd "$REPO" && go build -o "$R/vmtest/bin/tjob-init" ./cmd/tjob-init) || die "cannot build tjob-init"
	(cd "$REPO/service" && go build -o "$R/vmtest/bin/tjobs" ./tjobs) || die "cannot build tjobs"
fi
if [ -n "$bins" ] && compgen -G "$REPO/cli/tjob/*.go" >/dev/null; then
	say "building tjob"
	(cd "$REPO/cli" && go build -o "$R/vmtest/bin/tjob" ./tjob) || die "cannot build tjob"
fi

# Benchmarks compare with bubblewrap: the host's binary and its libraries.
if [ -n "${VMTEST_BENCH:-}" ] && command -v bwrap >/dev/null; then
	bwrap_bin=$(command -v bwrap)
	for f in "$bwrap_bin" $(ldd "$bwrap_bin" | grep -o '/[^ ]*'); do
		mkdir -p "$R$(dirname "$f")"
		cp -L "$f" "$R$f"
	done
fi

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # quote for the guest's sh
cat >"$R/vmtest/env" <<EOF
export TJOB_REQUIRE_CGROUP=v2 TJOB_TEST_BLOCKDIR=/mnt/disk TJOB_BIN_DIR=/vmtest/bin TJOB_PROBE=/vmtest/bin/tjob-probe
export VMTEST_RUN=$(q "${VMTEST_RUN:-}") VMTEST_SKIP=$(q "${VMTEST_SKIP:-}")
export VMTEST_TEST_TIMEOUT=$(q "$TEST_TIMEOUT")
export VMTEST_BENCH=$(q "${VMTEST_BENCH:-}") VMTEST_BENCHTIME=$(q "${VMTEST_BENCHTIME:-20x}")
export VMTEST_SELFCHECK_BREAK=$(q "${VMTEST_SELFCHECK_BREAK:-}")
EOF

# Uncompressed: gzip costs the host ~3 s and boots no faster (measured).
(cd "$R" && find . | cpio -o -H newc -R 0:0 --quiet) >"$WORK/initrd.cpio"
# The scratch disk, a real block device for io.max (TJOB_TEST_BLOCKDIR).
truncate -s 128M "$WORK/disk.img"
mkfs.ext4 -q -F -L vmtest "$WORK/disk.img"

# --- boot --------------------------------------------------------------------
say "booting $KVER: qemu TCG, 2 CPUs, 2 GiB, killed after ${TIMEOUT}s; log in $LOG"
start=$SECONDS
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
	-accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
	-display none -monitor none -serial stdio -no-reboot -nic none \
	-kernel "$VMLINUZ" -initrd "$WORK/initrd.cpio" \
	-append "console=ttyS0 panic=-1 quiet" \
	-drive file="$WORK/disk.img",format=raw,if=virtio \
	</dev/null 2>&1 | tee "$LOG"
qemu_rc=${PIPESTATUS[0]}
set -e
took=$((SECONDS - start))

result=$(tr -d '\r' <"$LOG" | grep -a '^VMTEST-RESULT ' | tail -1 || true)
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
	say "FAIL: guest killed after ${TIMEOUT}s (hung?); console log: $LOG"
	exit 1
fi
if [ -z "$result" ]; then
	say "FAIL: guest stopped without a result (qemu exit $qemu_rc); console log: $LOG"
	exit 1
fi
passed=${result#*passed=}
passed=${passed%% *}
failed=${result#*failed=}
say "guest ran ${took}s (boot and tests); test packages:"
say "$passed passed, $failed failed"
[ "$failed" = 0 ]
