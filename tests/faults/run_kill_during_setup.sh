#!/usr/bin/env bash
# A rank killed with SIGKILL during a Buffer's set-up leaves nothing in
# /dev/shm (docs/comm.md, "Transports"): at two moments, 4 ranks (2 virtual
# nodes of 2, and one node of 4).
#
#   run_kill_during_setup.sh PROGRAM MPIEXEC [MPIEXEC FLAGS...]
set -uo pipefail
# Where allowed (root), in a /dev/shm of its own: then other jobs' objects
# cannot blur the count, and what the killed jobs leave (Open MPI's own
# segments too) goes with the namespace.
if [[ -z ${EPX_KILL_TEST_PRIVATE_SHM:-} ]] && unshare --mount --propagation private true 2>/dev/null; then
  EPX_KILL_TEST_PRIVATE_SHM=1 exec unshare --mount --propagation private -- \
    /bin/sh -c 'mount -t tmpfs -o mode=1777 epx-kill-test /dev/shm && exec "$0" "$@"' "$0" "$@"
fi
program=$1
shift
mpiexec=("$@")

names() { ls /dev/shm 2>/dev/null | grep '^epx-' | sort; }
failed=0
for rpn in 2 4; do
  for delay in 150 600; do
    before=$(names)
    start=$SECONDS
    EPX_RANKS_PER_NODE=$rpn timeout -k 5 60 "${mpiexec[@]}" -n 4 "$program" "$delay" >/dev/null 2>&1
    rc=$?
    # mpirun itself exits 137 for a rank killed by SIGKILL; timeout's 124 (or
    # its own KILL, after 60 s) means the job did not end.
    if ((rc == 0 || rc == 124 || SECONDS - start >= 60)); then
      echo "FAILED: ranks per node $rpn, kill after $delay ms: exit status $rc (expected the job to end with the killed rank)"
      failed=1
      continue
    fi
    # Other jobs' objects (epx builds of other trees) come and go; a leak stays.
    left=""
    for _ in $(seq 30); do
      left=$(comm -13 <(echo "$before") <(names))
      [[ -z $left ]] && break
      sleep 0.1
    done
    if [[ -n $left ]]; then
      echo "FAILED: ranks per node $rpn, kill after $delay ms: left in /dev/shm: $(echo $left)"
      failed=1
    else
      echo "ok: ranks per node $rpn, kill after $delay ms: nothing left in /dev/shm"
    fi
  done
done
exit $failed
