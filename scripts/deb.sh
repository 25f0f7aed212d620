#!/usr/bin/env bash
# Builds the Debian packages mcgw and mcx-tools (make deb; debian/).
#   scripts/deb.sh [-a ARCH] [-o OUTDIR] [-V VERSION] [-n] [-L]
#     -a ARCH     host architecture; default the machine's. Another one
#                 (arm64) is a cross build with Debian's multiarch toolchain,
#                 its unit tests run under qemu-user-static
#     -o OUTDIR   where the .deb, .ddeb, .buildinfo and .changes go
#                 (default build/deb); older ones of the same ARCH are removed
#     -V VERSION  build as VERSION: a changelog entry is added in the copy
#                 (the upgrade test builds a newer package this way)
#     -n          nocheck: skip the unit tests
#     -L          skip lintian
# The tree is built from a copy (the files git knows, tracked or new and not
# ignored), so neither build/ nor the worktree gains dpkg-buildpackage's
# debris, and what is built is exactly the tree's code. Then lintian: any
# error or warning fails (warnings are fixed or overridden, with a reason,
# in debian/*.lintian-overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

native=$(dpkg --print-architecture)
arch=$native outdir=build/deb version='' nocheck='' lintian=yes
while getopts a:o:V:nL opt; do
  case $opt in
    a) arch=$OPTARG ;;
    o) outdir=$OPTARG ;;
    V) version=$OPTARG ;;
    n) nocheck=yes ;;
    L) lintian='' ;;
    *) sed -n '2,13s/^# \?//p' "$0" >&2; exit 2 ;;
  esac
done
[ -n "$arch" ] || arch=$native

profiles=""
if [ "$arch" = "$native" ]; then
  scripts/deps.sh deb
else
  [ "$arch" = arm64 ] || { echo "deb: cross builds are scripted for arm64 only, not $arch" >&2; exit 2; }
  export MCGW_CROSS_DIR=$src/build/cross-$arch
  scripts/deps.sh deb-arm64
  # libcjose-dev:arm64 comes unpacked aside (scripts/deps.sh cross_cjose).
  export PKG_CONFIG_PATH=$MCGW_CROSS_DIR/pkgconfig
  profiles=pkg.mcgw.cjose-extracted,cross
  # The target's binaries run under qemu-user-static (debian/rules), so the
  # unit tests and help2man can run them.
  export DEB_BUILD_OPTIONS="crossbuildcanrunhostbinaries ${DEB_BUILD_OPTIONS:-}"
  CC=$(dpkg-architecture -a"$arch" -qDEB_HOST_GNU_TYPE 2>/dev/null)-gcc
  export CC
fi

mkdir -p "$outdir"
outdir=$(realpath "$outdir")
work=$(mktemp -d "$outdir/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/mcgw
mkdir "$tree"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # (a file deleted but not yet committed is listed too: left out)
  git -C "$src" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [ -e "$src/$f" ] || [ -L "$src/$f" ]; then printf '%s\0' "$f"; fi
    done |
    tar -C "$src" --null -T - -cf - | tar -C "$tree" -xf -
else
  tar -C "$src" --exclude-vcs --exclude=./build --exclude='./build-*' --exclude=node_modules \
    -cf - . | tar -C "$tree" -xf -
fi

if [ -n "$version" ]; then
  {
    printf 'mcgw (%s) bookworm; urgency=medium\n\n  * Build of the working tree as %s.\n\n' "$version" "$version"
    printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$tree/debian/changelog" -S Maintainer)" \
      "$(date -R)"
    cat "$tree/debian/changelog"
  } >"$work/changelog"
  mv "$work/changelog" "$tree/debian/changelog"
fi

if [ -n "$nocheck" ]; then
  export DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}"
  profiles=${profiles:+$profiles,}nocheck
fi
opts=(-b -us -uc "-j${JOBS:-2}" "-a$arch" ${profiles:+"-P$profiles"})
echo "deb: dpkg-buildpackage ${opts[*]} (log: $outdir/build-$arch.log)"
if ! (cd "$tree" && dpkg-buildpackage "${opts[@]}") >"$outdir/build-$arch.log" 2>&1; then
  tail -40 "$outdir/build-$arch.log" >&2
  echo "deb: dpkg-buildpackage failed (log: $outdir/build-$arch.log)" >&2
  exit 1
fi
grep -E '^mcgw [0-9]|tests passed|tests failed' "$outdir/build-$arch.log" || true

rm -f "$outdir"/*_"$arch".deb "$outdir"/*_"$arch".ddeb "$outdir"/*_"$arch".buildinfo \
  "$outdir"/*_"$arch".changes
mv "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$outdir"/
mv "$work"/*.ddeb "$outdir"/ 2>/dev/null || true
changes=("$outdir"/*_"$arch".changes)
debs=("$outdir"/*_"$arch".deb)
echo "deb: built ${debs[*]##*/} in $outdir"

if [ -n "$lintian" ]; then
  echo "deb: lintian ${changes[*]}"
  lintian --fail-on error,warning "${changes[@]}"
  echo "deb: lintian: no error, no warning"
fi
