#!/usr/bin/env bash
# A fault in the middle of dispatch and combine on the emulated cluster (2
# nodes of 2 ranks, 1 Gbit/s links), and what every rank left must do:
# raise (Timeout, or PeerFailure from a peer that did) within the timeout
# (docs/internode.md, "Faults").
#
#   run_peer_fault.sh CLUSTER_SH NAME kill|link TRANSPORT PROGRAM [MPIRUN FLAGS...]
#
# kill: rank 2 (node 1) SIGKILLs itself at a random moment of its calls; the
#       three others must raise, one at least naming rank 2. mpirun's SIGTERM
#       to them is ignored, and odls_base_sigkill_timeout (10 s) outlasts
#       EPX_TIMEOUT_S (3 s).
# link: node 1's link is cut both ways; all four must raise, one at least
#       naming a rank across the cut.
# Exits 77 (skipped) where the cluster cannot be made.
set -uo pipefail
cluster=$1 name=$2 mode=$3 transport=$4 program=$5
shift 5
# shellcheck source=../cluster/cluster_probe.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/cluster_probe.sh" "$name"

timeout_s=3
dir=$(mktemp -d)
c() { "$cluster" --name "$name" "$@"; }
c down >/dev/null 2>&1
cleanup() {
  [[ -n ${run_pid:-} ]] && kill -9 "$run_pid" 2>/dev/null
  c down
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "peer fault test ($mode, $transport): FAILED: $*"
  for f in "$dir"/rank-*; do [[ -f $f ]] && echo "  $(cat "$f")"; done
  echo "--- the run's output"
  cat "$dir/log"
  exit 1
}
c up 2 --ranks-per-node 2 --rate 1gbit || exit 1

args=("$dir" "$mode")
[[ $mode == kill ]] && args+=(2)
c run -np 4 --mca odls_base_sigkill_timeout 10 -x EPX_TIMEOUT_S=$timeout_s \
  -x EPX_INTERNODE_TRANSPORT="$transport" "$@" "$program" "${args[@]}" >"$dir/log" 2>&1 &
run_pid=$!
for _ in $(seq 300); do
  [[ -f $dir/running ]] && break
  kill -0 "$run_pid" 2>/dev/null || fail "the run ended before the fault"
  sleep 0.1
done
[[ -f $dir/running ]] || fail "the ranks did not reach 20 iterations in 30 s"
if [[ $mode == link ]]; then
  sleep 0.3
  c link 1 down || fail "cutting node 1's link"
  echo "node 1's link cut"
  survivors=(0 1 2 3)
else
  survivors=(0 1 3)
fi
start=$SECONDS
for r in "${survivors[@]}"; do
  while [[ ! -f $dir/rank-$r ]] && ((SECONDS - start < 4 * timeout_s + 10)); do sleep 0.1; done
  [[ -f $dir/rank-$r ]] || fail "rank $r did not raise within $((4 * timeout_s + 10)) s of the fault"
done
[[ $mode == kill && -f $dir/rank-2 ]] && fail "the killed rank 2 wrote a verdict"
# Every rank left raised in time. A rank names the peer its own wait was on
# (Timeout: "waiting for rank N"), or the rank that aborted the group first
# (PeerFailure, with that rank's reason); so the lost peer is named by the
# ranks that waited on it directly: in kill mode at least one names rank 2,
# in link mode at least one names a rank across the cut (the others may wait
# on a rank of their own node that waits across it).
named_2=0 named_from_0=0 named_from_1=0
for r in "${survivors[@]}"; do
  v=$(cat "$dir/rank-$r")
  [[ $v =~ raised\ (Timeout|PeerFailure)\ after\ ([0-9.]+)\ s ]] || fail "rank $r: not a Timeout or PeerFailure: $v"
  code=${BASH_REMATCH[1]} after=${BASH_REMATCH[2]}
  awk -v a="$after" -v t="$timeout_s" 'BEGIN { exit !(a <= t + 3) }' ||
    fail "rank $r raised $after s after its last completed call, the timeout is $timeout_s s"
  if [[ $code == PeerFailure ]]; then
    [[ $v =~ rank\ [0-9]+\ aborted\ the\ group ]] || fail "rank $r: a PeerFailure that names no rank: $v"
  else
    [[ $v =~ waiting\ for\ rank\ [0-9]+ ]] || fail "rank $r: a Timeout that names no peer: $v"
  fi
  [[ $v =~ waiting\ for\ rank\ 2[^0-9] ]] && named_2=1
  ((r < 2)) && [[ $v =~ waiting\ for\ rank\ [23][^0-9] ]] && named_from_0=1
  ((r >= 2)) && [[ $v =~ waiting\ for\ rank\ [01][^0-9] ]] && named_from_1=1
  echo "ok: $(cut -c1-300 <<<"$v")"
done
if [[ $mode == kill ]]; then
  ((named_2)) || fail "no rank named the killed rank 2"
else
  ((named_from_0 || named_from_1)) || fail "no rank named a rank across the cut link"
fi
echo "peer fault test ($mode, $transport): OK, every rank left raised within the timeout, naming a lost peer"
