#!/usr/bin/env bash
# Installs, builds everything and runs the whole test suite (unit and
# multi-rank), plus the checks that guard the habits. Safe to run again.
# Stages, in order, each ending in one line "test: stage NAME OK (N s)":
#   format        clang-format on the lines changed (scripts/check_format.sh)
#   duplicates    repeated code added by the change (reported, never fails)
#   werror-build  setup and the whole build, warnings as errors (EPX_WERROR=ON)
#   ctest         every test of build/
#   sanitize      unit tests and a multi-rank subset under ASan+UBSan (scripts/sanitize.sh)
# A failure names its stage. The last line says OK or FAILED; the exit status too.
#
#   bash scripts/test.sh [extra ctest arguments, e.g. -R dispatch]   # for the ctest stage
#   CTEST_JOBS=1 bash scripts/test.sh     # tests run in parallel (default 2)
#   TEST_STAGES="format sanitize" bash scripts/test.sh   # only these stages
set -uo pipefail

all_start=$SECONDS
ctest_note=""
fail() {
  echo "test: FAILED: $*" >&2
  exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.." || fail "cannot enter the repository root"
stages=${TEST_STAGES:-format duplicates werror-build ctest sanitize}
for s in $stages; do
  case "$s" in
    format | duplicates | werror-build | ctest | sanitize) ;;
    *) fail "TEST_STAGES: unknown stage '$s' (format duplicates werror-build ctest sanitize)" ;;
  esac
done
wants() { [[ " $stages " == *" $1 "* ]]; }

if wants format; then
  start=$SECONDS
  bash scripts/check_format.sh
  case $? in
    0) echo "test: stage format OK ($((SECONDS - start)) s)" ;;
    77) echo "test: stage format skipped (see the reason above)" ;;
    *) fail "stage format: changed lines are not clang-formatted (see above)" ;;
  esac
fi

if wants duplicates; then
  start=$SECONDS
  if ! command -v duplicates >/dev/null; then
    echo "test: stage duplicates skipped: the duplicates tool is not installed"
  elif ! base=$(bash scripts/change_base.sh 2>&1); then
    echo "test: stage duplicates skipped: $base"
  else
    # A report for the reviewer, not a verdict: the tree has pairs today.
    duplicates --change --base "$base" | sed 's/^/duplicates: /'
    echo "test: stage duplicates OK, reported, not judged ($((SECONDS - start)) s)"
  fi
fi

if wants werror-build; then
  start=$SECONDS
  EPX_CMAKE_ARGS="-DEPX_WERROR=ON" bash scripts/setup.sh --all ||
    fail "stage werror-build: setup or build (a warning is an error here; see above)"
  echo "test: stage werror-build OK ($((SECONDS - start)) s)"
fi

if wants ctest; then
  start=$SECONDS
  echo "test: ctest, ${CTEST_JOBS:-2} jobs"
  # A test that outlives 600 s is hung, not slow: the suite fits in 15 minutes.
  log=build/test-ctest.log
  ctest --test-dir build --output-on-failure --no-tests=error -j "${CTEST_JOBS:-2}" --timeout 600 "$@" |
    tee "$log"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) || fail "stage ctest: exit status $rc: the failing tests are listed above"
  # Skipped tests (GPU tests without a GPU, say) are not passes: count them.
  skipped=$(grep -c '(Skipped)$' "$log" || true)
  echo "test: stage ctest OK, all tests passed, $skipped skipped ($((SECONDS - start)) s)"
  ctest_note=", $skipped tests skipped"
fi

if wants sanitize; then
  start=$SECONDS
  CTEST_JOBS=${CTEST_JOBS:-2} bash scripts/sanitize.sh || fail "stage sanitize (see above)"
  echo "test: stage sanitize OK ($((SECONDS - start)) s)"
fi

echo "test: OK, stages: $stages$ctest_note ($((SECONDS - all_start)) s)"
