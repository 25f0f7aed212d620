#!/usr/bin/env bash
# Installs what building, running and testing mcgw needs on Debian 12, and
# nothing that is already there. Idempotent; safe to run before every build.
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh test     also the test peers (pytest, h2, openssl, curl, npm packages)
#                            and the fuzzing toolchain (make test runs a fuzz smoke)
#   scripts/deps.sh bench    also what `make bench` compares against and plots with
#   scripts/deps.sh fuzz     build dependencies and the fuzzing toolchain (make fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."

build_pkgs=(build-essential cmake pkg-config libssl-dev libuv1-dev libnghttp2-dev
  node-llhttp libjansson-dev libcjose-dev libinih-dev libcmocka-dev libsystemd-dev
  libpsl-dev publicsuffix)
test_pkgs=(python3 python3-pytest python3-pytest-timeout python3-h2 openssl curl
  prometheus chromium tshark libnss3-tools)
bench_pkgs=(python3 squid tinyproxy gnuplot-nox valgrind)
fuzz_pkgs=(clang-14 libclang-rt-14-dev)

want=("${build_pkgs[@]}")
[ "${1:-}" = test ] && want+=("${test_pkgs[@]}" "${fuzz_pkgs[@]}")
[ "${1:-}" = bench ] && want+=("${bench_pkgs[@]}")
[ "${1:-}" = fuzz ] && want+=("${fuzz_pkgs[@]}")
# The test IdMS runs on node with npm packages. Checked by command, not by
# package: a node from another source (with its own npm) is fine too.
if [ "${1:-}" = test ]; then
  command -v node >/dev/null 2>&1 || want+=(nodejs)
  command -v npm >/dev/null 2>&1 || want+=(npm)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages the tests need (the test IdMS), from the committed lockfile;
# again whenever the lockfile is newer than the last install (npm ci records
# that install in node_modules/.package-lock.json).
if [ "${1:-}" = test ]; then
  for dir in tests/idms tests/ui; do
    if [ -f "$dir/package-lock.json" ] &&
      { [ ! -f "$dir/node_modules/.package-lock.json" ] ||
        [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; }; then
      echo "deps: npm ci in $dir"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
fi
