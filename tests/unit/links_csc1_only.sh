#!/bin/sh
# mcx-login links the CSC-1 library only: none of the daemon's libraries
# (inih, libsystemd, libpsl) among the shared libraries it needs. ldd where it
# can run the binary's loader; readelf's NEEDED entries when it cannot (a
# cross build: an arm64 binary on an amd64 machine).
set -u
bin=$1
if out=$(ldd "$bin" 2>/dev/null); then :; else out=$(readelf -d "$bin") || exit 1; fi
printf '%s\n' "$out"
if printf '%s\n' "$out" | grep -E 'libinih|libsystemd|libpsl'; then
  echo "links_csc1_only: $bin needs a library of the daemon (above)" >&2
  exit 1
fi
