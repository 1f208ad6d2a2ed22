# tjob: the two commands that matter are `make demo` and `make test`.
GO      ?= go
MODULES := . service cli
# The fuzz targets run briefly on every `make test`.
FUZZTIME ?= 10s

.PHONY: test lint hosttest fuzz soak vmtest vmbench demo bench

# Every test this machine can run: checks, the host's tests (cgroup v1 or v2,
# whichever the host has), then the same tests on cgroup v2 inside a VM when
# qemu is here (.ci/run installs it).
test: lint hosttest fuzz
	@if command -v qemu-system-x86_64 >/dev/null; then \
		$(MAKE) vmtest; \
	else \
		echo "SKIP vmtest: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"; \
	fi

# gofmt and go vet on every module; bench/ too, though only make bench runs it.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@for m in $(MODULES) bench; do [ -f $$m/go.mod ] || continue; (cd $$m && $(GO) vet ./...) || exit 1; done
	@if [ -f service/checkgen.sh ]; then bash service/checkgen.sh; fi

hosttest:
	@for m in $(MODULES); do [ -f $$m/go.mod ] || continue; \
		echo "== go test -race $$m"; \
		(cd $$m && $(GO) test -race -count=1 -timeout 15m ./...) || exit 1; done

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzOutput$$' -fuzztime $(FUZZTIME) .
	cd service && $(GO) test -run '^$$' -fuzz '^FuzzLookup$$' -fuzztime $(FUZZTIME) ./server
	cd cli && $(GO) test -run '^$$' -fuzz '^FuzzParseArgs$$' -fuzztime $(FUZZTIME) ./tjob
	cd cli && $(GO) test -run '^$$' -fuzz '^FuzzLogsCodec$$' -fuzztime $(FUZZTIME) ./tjob

# The long reliability run: more clients, jobs and disconnects. CI runs it once.
soak:
	cd service && TJOB_SOAK=1 $(GO) test -race -count=1 -timeout 20m -run '^TestReliability' ./server
	cd cli && TJOB_SOAK=1 $(GO) test -race -count=1 -timeout 45m -run '^TestReliability' ./e2e

vmtest:
	bash test/vm/run.sh

# The library's start benchmark on cgroup v2, in the VM, next to unshare
# and bwrap in the same guest (make bench runs it too).
vmbench:
	VMTEST_PKGS=. VMTEST_RUN='^$$' VMTEST_BENCH='^BenchmarkStart$$' bash test/vm/run.sh

demo:
	bash hack/demo.sh

bench:
	bash bench/run.sh
