#!/usr/bin/env bash
# Checks epxrun end to end: usage errors, the command lines it builds, and
# real launches through mpirun. Run by ctest: test_epxrun.sh path/to/epxrun
set -u
epxrun=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
bindir=$(dirname "$epxrun")
# run, fail, expect_status, expect_in, expect_not_in; $failures counts.
source "$(dirname "${BASH_SOURCE[0]}")/test_helpers.sh"

# --help documents every flag.
run "$epxrun" --help
expect_status 0 "--help"
for flag in -n --ranks-per-node --hostfile -x --launcher --dry-run --print-config --help; do
  expect_in "$flag" "--help mentions $flag"
done

# Usage errors: exit 2 with a message naming the problem.
run "$epxrun"; expect_status 2 "no arguments"; expect_in "missing '-- PROGRAM'" "no arguments"
run "$epxrun" -n 4; expect_status 2 "no --"; expect_in "missing '-- PROGRAM'" "no --"
run "$epxrun" -n 4 --; expect_status 2 "nothing after --"; expect_in "no program" "nothing after --"
run "$epxrun" -n 0 -- true; expect_status 2 "-n 0"; expect_in "bad -n value '0'" "-n 0"
run "$epxrun" -n four -- true; expect_status 2 "-n four"; expect_in "bad -n value 'four'" "-n four"
run "$epxrun" -- true; expect_status 2 "no -n"; expect_in "missing -n" "no -n"
run "$epxrun" --bogus -n 2 -- true; expect_status 2 "unknown option"; expect_in "unknown option '--bogus'" "unknown option"
run "$epxrun" -n 2 prog -- true; expect_status 2 "word before --"; expect_in "unexpected argument 'prog'" "word before --"
run "$epxrun" -n 2 -x 9X=1 -- true; expect_status 2 "bad -x"; expect_in "bad -x value '9X=1'" "bad -x"
run "$epxrun" -n 2 --ranks-per-node 4 -- true; expect_status 2 "rpn > n"; expect_in "bad --ranks-per-node" "rpn > n"
run "$epxrun" -n 4 --ranks-per-node 3 -- true; expect_status 2 "rpn does not divide n"
expect_in "bad --ranks-per-node value '3': the 4 ranks of -n do not split into nodes of 3" "rpn does not divide n"
run "$epxrun" -n 4 -x EPX_RANKS_PER_NODE=3 -- true; expect_status 2 "-x rpn does not divide n"
expect_in "bad -x EPX_RANKS_PER_NODE value '3'" "-x rpn does not divide n"
run "$epxrun" -n 6 --ranks-per-node 3 --dry-run -- true; expect_status 0 "rpn divides n"
run "$epxrun" -n 2 --hostfile /nonexistent/hosts -- true; expect_status 2 "missing hostfile"
expect_in "cannot read --hostfile /nonexistent/hosts" "missing hostfile"

# Command lines.
run "$epxrun" -n 1 --dry-run -- true
expect_status 0 "dry run"
expect_in "epxrun: mpirun -n 1 " "dry run prints the command"
expect_in "--map-by core --bind-to core" "one rank fits the cores"
expect_not_in "--oversubscribe" "one rank fits the cores"
if [[ $(id -u) -eq 0 ]]; then expect_in "--allow-run-as-root" "root"; fi
run "$epxrun" -n 4096 --dry-run -- true
expect_in "--oversubscribe --bind-to none --mca mpi_yield_when_idle 1" "more ranks than cores"
run env EPX_FROM_ENV=1 "$epxrun" -n 2 --ranks-per-node 1 -x FOO='a b' --dry-run -- true
expect_in "-x EPX_FROM_ENV" "EPX_* forwarded"
expect_in "-x EPX_RANKS_PER_NODE=1" "--ranks-per-node exported"
expect_in "-x 'FOO=a b'" "-x NAME=VALUE, quoted"
run "$epxrun" -n 2 --launcher srun -x A=1 --dry-run -- true
expect_in "epxrun: srun -n 2 --export=ALL,A=1,OPENBLAS_NUM_THREADS=1,OMP_NUM_THREADS=1 " "srun command"
OPENBLAS_NUM_THREADS=3 run "$epxrun" --dry-run -n 2 -- true
expect_not_in "OPENBLAS_NUM_THREADS=1" "a user's OPENBLAS_NUM_THREADS is kept"

# Program resolution: absolute paths; a bare name found next to epxrun.
run env PATH=/usr/bin:/bin "$epxrun" -n 1 --dry-run -- epxrun
expect_status 0 "bare name next to epxrun"; expect_in " $epxrun" "bare name next to epxrun"
run bash -c "cd '$bindir' && '$epxrun' -n 1 --dry-run -- ./epxrun"
expect_in " $epxrun" "relative path made absolute"
run "$epxrun" -n 1 -- no-such-program-epx
expect_status 1 "unknown program"; expect_in "program 'no-such-program-epx' not found" "unknown program"
run env PATH=/nonexistent "$epxrun" -n 1 -- /bin/true
expect_status 1 "no mpirun"; expect_in "mpirun not found on PATH" "no mpirun"

# --print-config: the registry, with -x applied; bad values are caught here.
run "$epxrun" --print-config -x EPX_TIMEOUT_S=7
expect_status 0 "--print-config"; expect_in "EPX_TIMEOUT_S" "--print-config"; expect_in "= 7 " "--print-config -x"
expect_in "inter-node transport: " "--print-config names the inter-node transport"
run "$epxrun" --print-config -x EPX_INTERNODE_TRANSPORT=msg
expect_status 0 "--print-config msg"; expect_in "inter-node transport: msg (EPX_INTERNODE_TRANSPORT=msg)" "--print-config msg"
run "$epxrun" --print-config -x EPX_INTERNODE_TRANSPORT=tcp
expect_status 2 "--print-config bad transport"; expect_in "expected auto, ucx, rma or msg" "bad transport named"
run env EPX_TIMEOUT_S=soon "$epxrun" --print-config
expect_status 2 "--print-config with a bad value"; expect_in "EPX_TIMEOUT_S=soon" "bad value named"
# Values that parse but cannot bound a wait: refused, naming the variable.
for bad in -1 0 nan -inf; do
  run "$epxrun" --print-config -x EPX_TIMEOUT_S=$bad
  expect_status 2 "--print-config EPX_TIMEOUT_S=$bad"
  expect_in "EPX_TIMEOUT_S=$bad: expected a number of seconds > 0" "--print-config EPX_TIMEOUT_S=$bad"
done
run "$epxrun" --print-config -x EPX_TIMEOUT_S=inf
expect_status 0 "--print-config EPX_TIMEOUT_S=inf (no limit)"

# Real launches: ranks start (oversubscribed too), see -x, and the status comes back.
run "$epxrun" -n 3 -x EPX_PROBE=42 -- /bin/sh -c 'test "$EPX_PROBE" = 42 && test -n "$OMPI_COMM_WORLD_RANK"'
expect_status 0 "3 ranks with -x"
run "$epxrun" -n 2 -- /bin/sh -c 'exit 3'
expect_status 3 "exit status passed through"

# A program's usage error under epxrun is its own one line: mpirun's banners
# that only repeat the non-zero exit ("Primary job terminated normally ...")
# are dropped. What epxrun prints first is its command line.
run "$epxrun" -n 2 -- /bin/sh -c '[ "$OMPI_COMM_WORLD_RANK" = 0 ] && echo "prog: bad option --x" >&2; exit 2'
expect_status 2 "usage error under epxrun"
rest=$(printf '%s\n' "$out" | grep -v '^epxrun: mpirun ')
[[ "$rest" == "prog: bad option --x" ]] || fail "usage error under epxrun: expected one line, got: $rest"
run "$epxrun" -n 2 -- epx-bench dispatch --no-such-flag
expect_status 2 "epx-bench usage error under epxrun"
expect_in "epx-bench dispatch: unknown option '--no-such-flag'" "epx-bench usage error under epxrun"
expect_not_in "Primary job" "epx-bench usage error under epxrun"
expect_not_in "mpirun detected" "epx-bench usage error under epxrun"
# A rank killed by a signal is not a usage error: mpirun's report stays.
run "$epxrun" -n 2 -- /bin/sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then kill -SEGV $$; fi; sleep 1'
expect_status 139 "a rank killed by SIGSEGV"
expect_in "signal 11" "a rank killed by SIGSEGV: mpirun says so"

if ((failures)); then
  echo "test_epxrun: $failures check(s) failed"
  exit 1
fi
echo "test_epxrun: all checks passed"
