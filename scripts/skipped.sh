#!/usr/bin/env bash
# Prints every test that ctest's last run skipped, with its reason, so a
# skip is never mistaken for a pass: ctest counts a pytest file with a
# skipped test as passed, and LastTest.log says "Test Passed." even for a
# test that exited with its SKIP_RETURN_CODE. Reads the build dir's
# LastTest.log for the three forms a skip takes in this suite:
#   SKIPPED [1] file.py:12: reason     pytest -rs
#   SKIPPED: reason                    a script exiting 77 (scripts/fuzz.sh smoke);
#                                      such a script must print this line
#   [  SKIPPED ] test_name             cmocka
# and, separately, pytest's expected failures (XFAIL lines, -rx).
log="${1:-build}/Testing/Temporary/LastTest.log"
[ -f "$log" ] || exit 0
skips=$(grep -hE '^SKIPPED \[|^SKIPPED: |^\[  SKIPPED \]' "$log" | sort -u)
if [ -n "$skips" ]; then
  echo "Skipped tests (not run, not passed):"
  printf '%s\n' "$skips" | sed 's/^/  /'
else
  echo "No test was skipped."
fi
# pytest -rx: tests marked xfail (a known gap, written down) that failed as
# expected; not passes either.
xfails=$(grep -hE '^XFAIL ' "$log" | sort -u)
if [ -n "$xfails" ]; then
  echo "Known failures (xfail, not passed):"
  printf '%s\n' "$xfails" | sed 's/^/  /'
fi
