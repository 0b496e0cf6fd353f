#!/usr/bin/env bash
# Checks that the lines a change touches follow .clang-format (Debian's
# clang-format, through git clang-format): the commits since the base that
# scripts/change_base.sh prints (where HEAD left main; on main, HEAD~) plus
# the uncommitted changes. Only changed lines are judged, so older code need
# not be reformatted first. Prints the diff that would fix them.
# Exit status: 0 clean, 1 not formatted, 77 skipped (the reason is printed).
#
#   bash scripts/check_format.sh
#   EPX_CHANGE_BASE=v0.1.0 bash scripts/check_format.sh
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

if ! command -v git-clang-format >/dev/null || ! command -v clang-format >/dev/null; then
  echo "format: skipped: clang-format not installed (apt-get install clang-format)"
  exit 77
fi

base=$(bash scripts/change_base.sh 2>&1) || {
  echo "format: skipped: $base"
  exit 77
}

# --diff prints what clang-format would change in the lines changed since base.
out=$(git clang-format --diff --extensions c,h,cc,cpp,hpp,cu,cuh "$base" -- 2>&1)
rc=$?
case "$out" in
  "" | *"no modified files to format"* | *"clang-format did not modify any files"*)
    echo "format: changed lines since $(git rev-parse --short "$base") are formatted"
    exit 0
    ;;
esac
echo "$out"
if ((rc > 1)); then
  echo "format: git clang-format failed (exit status $rc)"
  exit 1
fi
echo "format: the lines above are not formatted; fix them with: git clang-format $(git rev-parse --short "$base")"
exit 1
