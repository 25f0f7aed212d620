#!/usr/bin/env bash
# Installs what building, running and testing mcgw needs on Debian 12, and
# nothing that is already there. Idempotent; safe to run before every build.
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh test     also the test peers (pytest, h2, openssl, curl, npm packages)
#                            and the fuzzing toolchain (make test runs a fuzz smoke)
#   scripts/deps.sh bench    also what `make bench` compares against and plots with
#   scripts/deps.sh fuzz     build dependencies and the fuzzing toolchain (make fuzz)
#   scripts/deps.sh deb      also the Debian packaging tools (make deb)
#   scripts/deps.sh deb-arm64  also the arm64 cross toolchain, the :arm64 -dev
#                            packages and qemu-user-static (make deb ARCH=arm64)
set -euo pipefail
cd "$(dirname "$0")/.."

build_pkgs=(build-essential cmake pkg-config libssl-dev libuv1-dev libnghttp2-dev
  node-llhttp libjansson-dev libcjose-dev libinih-dev libcmocka-dev libsystemd-dev
  libpsl-dev publicsuffix libc-ares-dev)
test_pkgs=(python3 python3-pytest python3-pytest-timeout python3-h2 openssl curl
  prometheus chromium tshark libnss3-tools clang-format-14 systemd dnsmasq-base)
bench_pkgs=(python3 squid tinyproxy gnuplot-nox valgrind socat)
fuzz_pkgs=(clang-14 libclang-rt-14-dev)
# make deb, and the package test in make test (tests/integration/test_deb_package.py,
# which also needs systemd: systemd-analyze, systemd-sysusers, the package's Depends).
deb_pkgs=(debhelper dpkg-dev fakeroot lintian help2man)
# make deb ARCH=arm64: Debian's multiarch cross toolchain; the host-arch (:arm64)
# libraries mcgw links, pkgconf:arm64 for the aarch64-linux-gnu-pkg-config
# wrapper, libc6:arm64 so that qemu-aarch64-static runs the binaries in place.
# libcjose-dev is not Multi-Arch: same in Debian 12: its :arm64 package would
# replace the native one and break every native build, so only the library
# (libcjose0:arm64) is installed and the rest is unpacked aside (cross_cjose).
arm64_libs=(libssl-dev libuv1-dev libnghttp2-dev libjansson-dev libcjose0 libinih-dev libc-ares-dev
  libcmocka-dev libsystemd-dev libpsl-dev pkgconf libc6)
arm64_pkgs=(crossbuild-essential-arm64 qemu-user-static "${arm64_libs[@]/%/:arm64}")

want=("${build_pkgs[@]}")
[ "${1:-}" = test ] && want+=("${test_pkgs[@]}" "${fuzz_pkgs[@]}" "${deb_pkgs[@]}")
[ "${1:-}" = deb ] && want+=("${deb_pkgs[@]}")
if [ "${1:-}" = deb-arm64 ]; then
  want+=("${deb_pkgs[@]}" "${arm64_pkgs[@]}")
  # Multiarch: apt must know arm64 before it can find the :arm64 packages.
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" != 0 ]; then
      echo "deps: run as root (dpkg --add-architecture arm64)" >&2
      exit 1
    fi
    dpkg --add-architecture arm64
  fi
fi
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
  # --no-remove: never make room by removing a package (a non-multiarch -dev
  # package of another architecture would otherwise replace the native one).
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends --no-remove \
    "${missing[@]}" >/dev/null
fi

# The arm64 development files of libcjose-dev, unpacked from Debian's package
# into MCGW_CROSS_DIR (default build/cross-arm64) rather than installed: its
# cjose.pc, pointed at that directory, and the libcjose.so link to the
# installed libcjose0:arm64. The headers are the native package's (the same
# files). scripts/deb.sh puts the directory on PKG_CONFIG_PATH.
cross_cjose() {
  local dir pkgver libver tmp
  dir=$(realpath -m "${MCGW_CROSS_DIR:-build/cross-arm64}")
  libver=$(dpkg-query -W -f='${Version}' libcjose0:arm64)
  [ -f "$dir/cjose.version" ] && [ "$(cat "$dir/cjose.version")" = "$libver" ] && return 0
  tmp=$(mktemp -d)
  # (as root apt warns that its _apt user cannot write to the private tmp)
  (cd "$tmp" && apt-get download -qq "libcjose-dev:arm64=$libver" 2>&1 |
    { grep -v '^W: Download is performed unsandboxed' || true; } >&2)
  dpkg-deb -x "$tmp"/libcjose-dev_*_arm64.deb "$tmp/x"
  pkgver=$(dpkg-deb -f "$tmp"/libcjose-dev_*_arm64.deb Version)
  [ "$pkgver" = "$libver" ] || { echo "deps: libcjose-dev:arm64 $pkgver != libcjose0:arm64 $libver" >&2; exit 1; }
  mkdir -p "$dir/pkgconfig" "$dir/lib"
  sed "s|^libdir=.*|libdir=$dir/lib|" "$tmp/x/usr/lib/aarch64-linux-gnu/pkgconfig/cjose.pc" >"$dir/pkgconfig/cjose.pc"
  ln -sfn "/usr/lib/aarch64-linux-gnu/$(readlink "$tmp/x/usr/lib/aarch64-linux-gnu/libcjose.so")" \
    "$dir/lib/libcjose.so"
  echo "$libver" >"$dir/cjose.version"
  rm -rf "$tmp"
  echo "deps: libcjose-dev:arm64 $libver unpacked in $dir"
}
[ "${1:-}" = deb-arm64 ] && cross_cjose

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
