#!/usr/bin/env bash
# Builds a second tree, build-asan/, with ASan and UBSan (EPX_SANITIZE) and
# runs the unit tests and a chosen multi-rank subset in it: comm, low-latency,
# errors, the pipeline executor, migration and the C ABI, on one node and on
# virtual nodes. Only what those tests need is built (no CUDA, Python or
# benchmarks), at -O1, so the stage fits in about 8 minutes on 2 cores.
# The last line says OK or FAILED; the exit status too.
#
#   bash scripts/sanitize.sh [extra ctest arguments]
#   JOBS=4 CTEST_JOBS=2 bash scripts/sanitize.sh
set -uo pipefail

fail() {
  echo "sanitize: FAILED: $*" >&2
  exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.." || fail "cannot enter the repository root"
tree=build-asan
mkdir -p "$tree" || fail "cannot create $tree/"
start=$SECONDS

# -O1 -g1: fast enough to build and run, with line numbers in the reports.
# TRACE logging compiled in, so that its lines are checked too (mpi.*.trace).
cmake -S . -B "$tree" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1" "-DCMAKE_C_FLAGS_DEBUG=-O1 -g1" \
  -DEPX_SANITIZE=address,undefined -DEPX_ENABLE_TRACE=ON \
  -DEPX_WITH_CUDA=OFF -DEPX_WITH_NCCL=OFF -DEPX_BUILD_PYTHON=OFF -DEPX_BUILD_BENCHMARKS=OFF \
  >"$tree/ci-configure.log" 2>&1 || { tail -n 40 "$tree/ci-configure.log" >&2; fail "configure (log: $tree/ci-configure.log)"; }

# The unit suites (every tests/unit/test_*.cpp) and the chosen multi-rank ones.
mpi_suites=(epx_test_comm epx_test_low_latency epx_test_comm_errors epx_test_pipeline_executor
  epx_test_migrate epx_test_capi)
targets=("${mpi_suites[@]}")
for src in tests/unit/test_*.cpp; do
  name=$(basename "$src" .cpp)
  targets+=("epx_$name")
done
echo "sanitize: build ${#targets[@]} test programs in $tree/ ($((SECONDS - start)) s)"
cmake --build "$tree" -j "${JOBS:-2}" --target "${targets[@]}" >"$tree/ci-build.log" 2>&1 ||
  { grep -E -A5 'error|FAILED' "$tree/ci-build.log" | head -n 60 >&2; fail "build (log: $tree/ci-build.log)"; }

# Reports end the program (-fno-sanitize-recover). Leak checking stays off
# for the multi-rank runs: Open MPI and UCX keep allocations until exit that
# LeakSanitizer would report as epx's.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mpi_regex='^(mpi\.(epx_test_comm|epx_test_low_latency|epx_test_comm_errors|epx_test_migrate)\.np(1|2|4)(\.2nodes)?|mpi\.epx_test_pipeline_executor\.np(1|2|4)|mpi\.epx_test_(comm|pipeline_executor)\.np2\.trace|capi\.c_consumer\..*)$'
echo "sanitize: ctest, unit tests ($((SECONDS - start)) s)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
  ctest --test-dir "$tree" -L unit --output-on-failure --no-tests=error -j "${CTEST_JOBS:-2}" \
  --timeout 300 "$@" >"$tree/ci-unit.log" 2>&1 ||
  { grep -E -B2 -A30 'ERROR: |runtime error|Failed|\*\*\*' "$tree/ci-unit.log" | head -n 80 >&2; fail "unit tests (log: $tree/ci-unit.log)"; }
echo "sanitize: ctest, multi-rank subset ($((SECONDS - start)) s)"
ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
  ctest --test-dir "$tree" -R "$mpi_regex" --output-on-failure --no-tests=error -j "${CTEST_JOBS:-2}" \
  --timeout 300 "$@" >"$tree/ci-mpi.log" 2>&1 ||
  { grep -E -B2 -A30 'ERROR: |runtime error|Failed|\*\*\*' "$tree/ci-mpi.log" | head -n 80 >&2; fail "multi-rank tests (log: $tree/ci-mpi.log)"; }
summary() { grep -E 'tests passed' "$1" | tail -n 1; }
echo "sanitize: OK, unit: $(summary "$tree/ci-unit.log"); multi-rank: $(summary "$tree/ci-mpi.log") ($((SECONDS - start)) s)"
