#!/usr/bin/env bash
# Prints the commit that the change-based checks (format, duplicates) compare
# with: EPX_CHANGE_BASE if set; else where HEAD left main (origin/main, then
# main); else HEAD~ (on main itself: the last commit, a merge's whole branch).
# Exit status 1, with the reason on stderr, when there is none (not a git
# checkout, or a single commit).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
if [[ -n "${EPX_CHANGE_BASE:-}" ]]; then
  git rev-parse --verify -q "$EPX_CHANGE_BASE^{commit}" || {
    echo "EPX_CHANGE_BASE=$EPX_CHANGE_BASE is not a commit" >&2
    exit 1
  }
  exit 0
fi
head=$(git rev-parse HEAD 2>/dev/null) || {
  echo "not a git checkout" >&2
  exit 1
}
for ref in origin/main main; do
  mb=$(git merge-base HEAD "$ref" 2>/dev/null) || continue
  if [[ "$mb" != "$head" ]]; then
    echo "$mb"
    exit 0
  fi
done
git rev-parse --verify -q 'HEAD~' || {
  echo "a single commit, nothing to compare with" >&2
  exit 1
}
