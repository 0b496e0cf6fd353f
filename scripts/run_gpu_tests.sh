#!/usr/bin/env bash
# Builds epx with CUDA and runs every GPU test (ctest label "gpu").
#
# For machines with an NVIDIA GPU. The GPU tests skip themselves when they see
# no CUDA device, which is right on CPU-only CI but wrong here: a skipped GPU
# test fails this script, as does a failed one, a build error, or finding no
# GPU tests at all.
#
# Usage: scripts/run_gpu_tests.sh [build-dir]     (default: <repo>/build-gpu)
# Environment: EPX_CMAKE_ARGS (extra configure arguments), JOBS (build jobs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-gpu}"
log="$build/gpu-tests.log"

fail() {
  echo "run_gpu_tests: FAILED: $*"
  exit 1
}

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L || echo "run_gpu_tests: nvidia-smi -L failed (continuing; the tests will tell)"
else
  echo "run_gpu_tests: nvidia-smi not found (continuing; the tests will tell)"
fi

generator=()
if [[ ! -f "$build/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi
# shellcheck disable=SC2086  # EPX_CMAKE_ARGS is a list of words on purpose
cmake -S "$root" -B "$build" "${generator[@]}" -DEPX_WITH_CUDA=ON -DEPX_BUILD_TESTS=ON \
  ${EPX_CMAKE_ARGS:-} || fail "cmake configure with -DEPX_WITH_CUDA=ON"
cmake --build "$build" -j "${JOBS:-$(nproc)}" || fail "build"

set +e
(cd "$build" && ctest -L gpu --output-on-failure --no-tests=error) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

total="$(sed -nE 's/.*tests failed out of ([0-9]+).*/\1/p' "$log" | tail -n 1)"
skipped="$(grep -c '\*\*\*Skipped' "$log" || true)"
[[ "$rc" -eq 0 ]] || fail "ctest -L gpu exited with $rc (log: $log)"
[[ "$skipped" -eq 0 ]] || fail "$skipped GPU test(s) skipped: no usable CUDA device? (log: $log)"
echo "run_gpu_tests: PASSED: all ${total:-?} GPU tests ran and passed"
