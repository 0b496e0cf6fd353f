#!/usr/bin/env bash
# A multi-rank suite on the emulated cluster (scripts/cluster.sh): real nodes
# with their own host names and /dev/shm, joined by rate-limited veths.
#
#   run_cluster_test.sh CLUSTER_SH NAME NODES RANKS_PER_NODE RATE LIMIT_S [--then AFTER_S RATE2] \
#       -- MPIRUN_ARGS... PROGRAM [ARGS]
#
# --then: AFTER_S seconds into the run, every node link drops (or rises) to
# RATE2; the run must still succeed (slow, not failed).
#
# Exits 77 (ctest: skipped) where the machine cannot make namespaces (not
# root, no `ip netns`, no unshare), 1 if the run fails or if some node's link
# carried no traffic (the suite would then not have crossed nodes).
set -uo pipefail
cluster=$1 name=$2 nodes=$3 rpn=$4 rate=$5 limit=$6
shift 6
then_after="" then_rate=""
if [[ ${1:-} == --then ]]; then
  then_after=$2 then_rate=$3
  shift 3
fi
[[ ${1:-} == -- ]] && shift

# shellcheck source=cluster_probe.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster_probe.sh" "$name"

c() { "$cluster" --name "$name" "$@"; }
# A cluster of this name left by a killed earlier run goes first.
c down >/dev/null 2>&1
trap 'c down' EXIT
c up "$nodes" --ranks-per-node "$rpn" --rate "$rate" || exit 1

log=$(mktemp)
trap 'c down; rm -f "$log"' EXIT
# timeout stops the run before ctest's own limit, so the trap still cleans up.
timeout -k 10 "$limit" "$cluster" --name "$name" run -np $((nodes * rpn)) "$@" 2> >(tee "$log" >&2) &
run_pid=$!
if [[ -n $then_after ]]; then
  sleep "$then_after"
  kill -0 "$run_pid" 2>/dev/null || { echo "cluster test: FAILED: the run ended before the rate change"; exit 1; }
  c tc "$then_rate" && echo "cluster test: node links now at $then_rate"
fi
wait "$run_pid"
rc=$?
wait  # for tee
((rc == 124)) && echo "cluster test: FAILED: timed out after $limit s"
((rc == 0)) || exit 1
# Every node must have sent and received across its link.
lines=$(grep -c '^cluster: link of node [0-9]*: sent [1-9][0-9]* bytes, received [1-9][0-9]* bytes' "$log")
if ((lines != nodes)); then
  echo "cluster test: FAILED: only $lines of $nodes node links carried traffic"
  exit 1
fi
echo "cluster test: OK ($nodes nodes of $rpn ranks at $rate${then_rate:+, then $then_rate})"
