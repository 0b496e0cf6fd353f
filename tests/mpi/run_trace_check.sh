#!/usr/bin/env bash
# A multi-rank run with TRACE logging on: it must pass, and its log must hold
# a line matching REGEX (the rounds of comm, the ops of a pipeline step).
#
#   run_trace_check.sh REGEX COMMAND...
set -uo pipefail
regex=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$@" >"$log" 2>&1
rc=$?
((rc == 0)) || { tail -n 40 "$log"; echo "trace check: FAILED: exit status $rc"; exit 1; }
n=$(grep -cE "$regex" "$log")
((n > 0)) || { tail -n 20 "$log"; echo "trace check: FAILED: no line matches '$regex'"; exit 1; }
echo "trace check: OK, $n lines match '$regex', e.g."
grep -m1 -E "$regex" "$log"
