"""A small test runner for the multi-rank Python tests (no pytest needed).

Every rank runs every test; rank 0 prints the summary line "N passed, M
failed", every rank prints its own failures, and the exit status is non-zero
on a rank with a failure (mpiexec then fails). Exit 77 (ctest: skipped) when
torch is missing.
"""

import os
import sys
import traceback

try:
    import torch  # noqa: F401
except ImportError:
    print("torch is not installed: skipped")
    sys.exit(77)

import epx  # noqa: E402


def allreduce_sum(buffer, group, t):
    """The sum of t over the ranks, identical on every rank, made of one
    dispatch (epx has no allreduce): the tensor goes to every rank as one
    token routed to one expert per rank, and each rank sums the R rows it got,
    in rank order."""
    R = group.size
    flat = t.reshape(1, -1).float().contiguous()
    num_experts = R  # one expert per rank
    idx = torch.arange(R, dtype=torch.int64).reshape(1, R)
    w = torch.ones(1, R)
    layout = buffer.get_dispatch_layout(idx, num_experts)
    rows = buffer.dispatch(flat, idx, w, layout).x
    return rows.sum(0).reshape(t.shape).to(t.dtype)


def run(tests):
    group = epx.Group()
    rank = group.rank
    passed, failed = 0, 0
    only = os.environ.get("EPX_PY_TEST")
    for test in tests:
        if only and only not in test.__name__:
            continue
        try:
            test(group)
            passed += 1
        except Exception:  # noqa: BLE001  (a test's failure, reported below)
            failed += 1
            print(f"[rank {rank}] FAILED {test.__name__}\n{traceback.format_exc()}", file=sys.stderr,
                  flush=True)
    if rank == 0:
        print(f"{sys.argv[0]} on {group.size} ranks, {group.num_nodes} nodes: "
              f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
