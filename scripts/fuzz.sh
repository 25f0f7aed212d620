#!/usr/bin/env bash
# libFuzzer harnesses (tests/fuzz/fuzz_*.c) in their own clang build.
#   scripts/fuzz.sh build              configure + build $FUZZ_BUILD (default build-fuzz)
#   scripts/fuzz.sh run [SECONDS] [H…] fuzz each harness (or those named) for SECONDS
#                                      (default $FUZZ_SECONDS or 60) from the committed
#                                      corpus and $FUZZ_BUILD/corpus/<h> (kept between
#                                      runs); then merges what adds coverage into the
#                                      committed corpus (tests/fuzz/corpus/<h>, -merge=1:
#                                      only inputs with new features, named by hash), and
#                                      copies any crash, leak or timeout there as
#                                      regression-<kind>-<hash>, which `make test` then
#                                      replays: commit it with the fix
#   scripts/fuzz.sh smoke H            what `make test` runs per harness: replay the
#                                      committed corpus, then fuzz $FUZZ_SMOKE_SECONDS (5)
# Exit 77 (ctest: skipped, with a "SKIPPED: " line that scripts/skipped.sh reports)
# when clang-14/libFuzzer are missing; scripts/deps.sh test installs them, so in CI the
# smoke runs do run.
# Per-harness libFuzzer flags: tests/fuzz/<h>.options (one line), optional.
# Dictionaries: tests/fuzz/<h>.dict, optional.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$src/build-fuzz}
case $build in /*) ;; *) build=$src/$build ;; esac
cc=${FUZZ_CC:-clang-14}

have_toolchain() {
  command -v "$cc" >/dev/null || { echo "fuzz: $cc not found (apt-get install clang-14 libclang-rt-14-dev)"; return 1; }
  local tmp; tmp=$(mktemp -d)
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$tmp/t.c"
  if ! "$cc" -fsanitize=fuzzer,address,undefined "$tmp/t.c" -o "$tmp/t" 2>"$tmp/err"; then
    echo "fuzz: $cc cannot link libFuzzer (apt-get install libclang-rt-14-dev):"; cat "$tmp/err"
    rm -rf "$tmp"; return 1
  fi
  rm -rf "$tmp"
}

# Serialised with flock: ctest runs several smoke tests at once, and they
# share this build directory.
do_build() {
  mkdir -p "$build"
  (
    flock 9
    CC=$cc cmake -S "$src" -B "$build" -DMCGW_FUZZ=ON -DMCGW_TESTS=OFF -DMCGW_BENCH=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
      { cat "$build/configure.log"; exit 1; }
    cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 ||
      { tail -n 80 "$build/build.log"; exit 1; }
  ) 9>"$build/.lock"
}

harnesses() {
  for f in "$src"/tests/fuzz/fuzz_*.c; do basename "$f" .c; done
}

# run_one H SECONDS WORKDIR: corpus replay (the committed seeds and any inputs
# already in WORKDIR), then fuzzing until SECONDS have passed in all.
run_one() {
  local h=$1 secs=$2 work=$3 bin=$build/fuzz/$1
  [ -x "$bin" ] || { echo "fuzz: no harness $h (is tests/fuzz/$h.c there?)"; return 1; }
  local seeds=$src/tests/fuzz/corpus/$h
  [ -d "$seeds" ] || { echo "fuzz: no seed corpus $seeds"; return 1; }
  local opts=() dict=$src/tests/fuzz/$h.dict
  [ -f "$src/tests/fuzz/$h.options" ] && read -r -a opts <"$src/tests/fuzz/$h.options"
  [ -f "$dict" ] && opts+=("-dict=$dict")
  mkdir -p "$work" "$build/artifacts"
  echo "fuzz: $h for ${secs}s (corpus: $(ls "$seeds" | wc -l) seeds)"
  local log=$build/$h.log
  # ASAN_OPTIONS: detect_leaks also at exit; UBSan reports are fatal.
  if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
     UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
     "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$h-" "${opts[@]}" "$work" "$seeds" >"$log" 2>&1; then
    grep -E 'INITED|DONE' "$log" | tail -n 2
    return 0
  fi
  echo "fuzz: $h FAILED; last lines of $log:"
  grep -v '^ts=' "$log" | tail -n 60
  ls -1 "$build/artifacts/$h-"* 2>/dev/null | sed 's/^/fuzz: reproducer: /'
  return 1
}

# keep_findings H: every reproducer of H becomes a regression input of its
# committed corpus (so `make test` replays it from now on), and leaves the
# artifacts directory.
keep_findings() {
  local h=$1 f kind
  for f in "$build/artifacts/$h-"*; do
    [ -e "$f" ] || continue
    kind=${f#"$build/artifacts/$h-"}
    kind=${kind%%-*}
    cp "$f" "$src/tests/fuzz/corpus/$h/regression-$kind-$(sha1sum <"$f" | cut -c1-16)"
    rm -f "$f"
    echo "fuzz: $h: reproducer kept as tests/fuzz/corpus/$h/regression-$kind-…: fix, then commit both"
  done
}

# merge H WORKDIR: adds to the committed corpus the inputs of WORKDIR that
# add coverage to it (libFuzzer -merge=1 writes them under their hash).
merge() {
  local h=$1 work=$2 bin=$build/fuzz/$1 seeds=$src/tests/fuzz/corpus/$1
  local before opts=()
  [ -f "$src/tests/fuzz/$h.options" ] && read -r -a opts <"$src/tests/fuzz/$h.options"
  before=$(ls "$seeds" | wc -l)
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$bin" -merge=1 -timeout=20 -rss_limit_mb=2048 \
    "${opts[@]}" "$seeds" "$work" >"$build/$h.merge.log" 2>&1 ||
    { echo "fuzz: $h: merge failed:"; grep -v '^ts=' "$build/$h.merge.log" | tail -n 20; return 1; }
  echo "fuzz: $h: corpus $before -> $(ls "$seeds" | wc -l) inputs ($(du -sh "$seeds" | cut -f1))"
}

cmd=${1:-}
case $cmd in
  build)
    have_toolchain || exit 77
    do_build ;;
  run)
    secs=${2:-${FUZZ_SECONDS:-60}}
    shift $(( $# >= 2 ? 2 : $# ))
    list=("$@"); [ ${#list[@]} -gt 0 ] || mapfile -t list < <(harnesses)
    have_toolchain || exit 77
    do_build
    rc=0
    for h in "${list[@]}"; do
      if run_one "$h" "$secs" "$build/corpus/$h"; then
        merge "$h" "$build/corpus/$h" || rc=1
      else
        keep_findings "$h"
        rc=1
      fi
    done
    exit $rc ;;
  smoke)
    h=${2:?usage: scripts/fuzz.sh smoke HARNESS}
    if ! have_toolchain; then echo "SKIPPED: fuzz smoke run of $h: no clang/libFuzzer"; exit 77; fi
    do_build
    work=$build/smoke/$h
    rm -rf "$work"
    run_one "$h" "${FUZZ_SMOKE_SECONDS:-5}" "$work" ;;
  *)
     sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
