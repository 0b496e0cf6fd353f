#!/usr/bin/env bash
# Installs what epx needs on Debian 12 (run as root; safe to run again), then
# configures and builds epx into build/. Without arguments it builds what the
# main job needs (the library, epxrun, epx-train, epx-bench, epx-serve, epx-generate); with --all it builds every
# target, tests included. The last line says OK or FAILED; the exit status too.
#
#   bash scripts/setup.sh [--all]
#   JOBS=8 bash scripts/setup.sh      # parallel build jobs (default 2)
#   EPX_CMAKE_ARGS="-DEPX_WERROR=ON" bash scripts/setup.sh   # extra configure options (test.sh)
set -uo pipefail

# Debian packages, one per need. The CUDA toolkit is not a Debian package: the
# build uses /usr/local/cuda when it is there.
PACKAGES=(
  build-essential   # g++, make, libc headers
  cmake             # the build (3.24 or newer)
  ninja-build       # the generator
  git               # cloning and updating the sources
  ca-certificates   # https for git
  openmpi-bin       # mpirun, used by epxrun and the multi-rank tests
  libopenmpi-dev    # MPI headers and libraries
  libgtest-dev      # GoogleTest
  nlohmann-json3-dev  # JSON: epx-eplb, safetensors headers, metrics
  libopenblas-dev   # sgemm for the model's kernels (epx-train)
  libyaml-cpp-dev   # epx-train's YAML configs
  libcpp-httplib-dev  # epx-serve's HTTP front end
  vim-runtime       # configs/tiny.yaml trains on its help text (/usr/share/vim/vim90/doc)
  libibverbs-dev    # detected for the RDMA transport to come (EPX_WITH_IBVERBS=AUTO)
  libucx-dev        # the inter-node transport (comm/transport/ucx; EPX_WITH_UCX=AUTO)
  pkgconf           # finds UCX (and builds the install test's consumer)
)

# With --all (the test suite): the scripts of the tests, the PyTorch
# reference that checks epx-train's losses (tests/reference), and what the
# Python module needs (EPX_BUILD_PYTHON=AUTO builds it when they are there).
TEST_PACKAGES=(
  python3           # tests/train/*.py
  python3-yaml      # tests/reference reads the configs
  python3-numpy     # torch's companion
  python3-torch     # tests/reference/torch_moe.py, and the Python module's tests (tests/python)
  python3-dev       # Python headers: the module `epx` (python/)
  pybind11-dev      # the module's bindings
)

say() { echo "setup: $*"; }
fail() {
  echo "setup: FAILED: $*" >&2
  exit 1
}

build_all=0
for arg in "$@"; do
  case "$arg" in
    --all) build_all=1 ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) fail "unknown argument '$arg' (expected --all or --help)" ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.." || fail "cannot enter the repository root"
root=$(pwd)
start=$SECONDS

# 1. Packages: apt-get only runs when something is missing.
((build_all)) && PACKAGES+=("${TEST_PACKAGES[@]}")
missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  say "packages: all ${#PACKAGES[@]} present"
else
  say "packages: installing ${missing[*]}"
  command -v apt-get >/dev/null || fail "apt-get not found: install ${missing[*]} by hand"
  if [[ $(id -u) -ne 0 ]]; then
    fail "missing packages ${missing[*]}: run this script as root (or sudo apt-get install them)"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || fail "apt-get update"
  apt-get install -y -q --no-install-recommends "${missing[@]}" || fail "apt-get install ${missing[*]}"
fi

# 2. Configure. An existing build/ keeps its generator and options; only a
# fresh one is created with Ninja.
if [[ -f build/CMakeCache.txt ]]; then
  say "configure: build/ (existing)"
  # shellcheck disable=SC2086  # EPX_CMAKE_ARGS is a list of options
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${EPX_CMAKE_ARGS:-} >build/setup-configure.log 2>&1 ||
    { tail -n 40 build/setup-configure.log >&2; fail "cmake configure (log: build/setup-configure.log)"; }
else
  say "configure: build/ (Ninja, Release)"
  mkdir -p build
  # shellcheck disable=SC2086
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${EPX_CMAKE_ARGS:-} >build/setup-configure.log 2>&1 ||
    { tail -n 40 build/setup-configure.log >&2; fail "cmake configure (log: build/setup-configure.log)"; }
fi
sed -n '/configuration summary/,/^-- $/p' build/setup-configure.log | sed '/^-- $/d; s/^-- /setup:   /'

# 3. Build.
jobs=${JOBS:-2}
if ((build_all)); then
  say "build: all targets, $jobs jobs"
  cmake --build build -j "$jobs" || fail "build (see the compiler errors above)"
else
  say "build: epx, epxrun, epx-train, epx-bench, epx-serve, epx-generate, $jobs jobs"
  cmake --build build -j "$jobs" --target epx epxrun epx-train epx-bench epx-serve epx-generate || fail "build (see the compiler errors above)"
fi
for exe in epxrun epx-train epx-bench epx-serve epx-generate; do
  [[ -x build/bin/$exe ]] || fail "build/bin/$exe was not produced"
done

say "OK, binaries in build/bin ($root/build/bin, $((SECONDS - start)) s)"
