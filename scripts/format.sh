#!/usr/bin/env bash
# clang-format (.clang-format at the top: today's style, LLVM-based, 2
# spaces, 100 columns) over the C sources a change touched.
#   scripts/format.sh check [BASE]  every C file changed since BASE (default:
#                                   the commit that brought .clang-format) is
#                                   formatted: clang-format --dry-run -Werror;
#                                   exit 1 naming each one that is not
#   scripts/format.sh fix [BASE]    formats those files in place
#   scripts/format.sh fix-all       formats every tracked C file
# Files nobody touched since keep their layout: formatting them all at once
# would bury history under whitespace; each is formatted when next changed.
set -euo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-clang-format-14}
command -v "$CF" >/dev/null ||
  { echo "format: $CF missing (Debian package clang-format-14; scripts/deps.sh test installs it)" >&2; exit 1; }
base=${2:-$(git log --diff-filter=A --format=%H -1 -- .clang-format)}
changed() {
  # Changed since base, committed or not, and still present.
  { git diff --name-only --diff-filter=d "$base" -- '*.c' '*.h'
    git ls-files --others --exclude-standard -- '*.c' '*.h'; } | sort -u
}
case "${1:-check}" in
  check)
    mapfile -t files < <(changed)
    bad=0
    for f in "${files[@]}"; do
      if ! "$CF" --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "format: $f is not formatted (scripts/format.sh fix formats it):" >&2
        "$CF" "$f" | diff -u "$f" - | head -20 >&2 || true
        bad=1
      fi
    done
    [ $bad = 0 ] && echo "format: ${#files[@]} changed C files since ${base:0:12}, all formatted"
    exit $bad ;;
  fix) mapfile -t files < <(changed); [ ${#files[@]} = 0 ] || "$CF" -i "${files[@]}" ;;
  fix-all) git ls-files -z '*.c' '*.h' | xargs -0 "$CF" -i ;;
  *) echo "usage: scripts/format.sh check|fix [BASE] | fix-all" >&2; exit 2 ;;
esac
