#!/usr/bin/env bash
# Prints every test that ctest's last run skipped, with its reason, so a
# skip is never mistaken for a pass (ctest counts a pytest file with a
# skipped test as passed). Reads the build dir's LastTest.log.
log="${1:-build}/Testing/Temporary/LastTest.log"
[ -f "$log" ] || exit 0
skips=$(grep -h '^SKIPPED \[' "$log" | sort -u)
if [ -n "$skips" ]; then
  echo "Skipped tests (not run, not passed):"
  printf '  %s\n' "$skips"
else
  echo "No test was skipped."
fi
