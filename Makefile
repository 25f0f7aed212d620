# Thin wrapper over CMake for the everyday commands. Each target first
# installs whatever is missing (scripts/deps.sh), so a fresh Debian 12
# machine needs nothing else.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES ?=
CONFIG     ?= configs/mcgw.ini
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=
ARCH       ?=

.PHONY: all build deps test-deps bench-deps run test test-asan check bench demo clean fuzz format deb

all: build

deps:
	@scripts/deps.sh

test-deps:
	@scripts/deps.sh test

bench-deps:
	@scripts/deps.sh bench

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/mcgw run -c $(CONFIG)

check: build
	$(BUILD)/mcgw check -c $(CONFIG)

test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j 2; rc=$$?; ../scripts/skipped.sh .; exit $$rc

# The whole suite once more under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: test-deps
	cmake -S . -B $(ASAN_BUILD) -DMCGW_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2; \
	  rc=$$?; ../scripts/skipped.sh .; exit $$rc

# mcgw side by side with Squid and tinyproxy on loopback (tests/bench/run.py;
# docs/benchmarks.md). BENCH_QUICK=1 for a short run.
bench: bench-deps build
	BUILD=$(abspath $(BUILD)) /usr/bin/python3 tests/bench/run.py
	BUILD=$(abspath $(BUILD)) /usr/bin/python3 tests/bench/udp.py

# Each libFuzzer harness (tests/fuzz/), or those in FUZZ_HARNESSES (e.g.
# "fuzz_relay_h1 fuzz_relay_h2 fuzz_relay_udp"), for FUZZ_SECONDS, in a clang build of its
# own; what adds coverage is merged into tests/fuzz/corpus/, crashes land there
# as regression inputs (scripts/fuzz.sh). `make test` runs a short smoke of each.
fuzz:
	@scripts/deps.sh fuzz
	FUZZ_BUILD=$(FUZZ_BUILD) scripts/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_HARNESSES)

# The whole story on loopback: the test IdMS, mcgw with configs/demo.ini, the
# gateway's login, a device's login through a tunnel, the status table
# (tests/demo/demo.py). Runs until Ctrl-C, or DEMO_SECONDS=N.
demo: test-deps $(BUILD)/CMakeCache.txt
	@echo "demo: building (log: $(BUILD)/build.log)"
	@cmake --build $(BUILD) -j $(JOBS) >$(BUILD)/build.log 2>&1 || { tail -40 $(BUILD)/build.log; exit 1; }
	@BUILD=$(abspath $(BUILD)) /usr/bin/python3 tests/demo/demo.py

# The Debian packages mcgw and mcx-tools in $(BUILD)/deb, lintian-checked
# (scripts/deb.sh, debian/). ARCH=arm64: cross-built, unit tests under qemu.
deb:
	scripts/deb.sh -o $(BUILD)/deb $(if $(ARCH),-a $(ARCH))

# clang-format the C files changed since .clang-format arrived (CI checks them:
# ctest lint.clang_format).
format:
	scripts/format.sh fix

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
