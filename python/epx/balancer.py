"""Expert placement: DeepSeek EPLB's rebalance_experts and epx's better policy.

rebalance_experts has EPLB's signature and returns what EPLB returns
(phy2log, log2phy, logcnt as int64 torch tensors), so it can replace
`eplb.rebalance_experts`; policy="eplb" gives EPLB's exact placement.
"""

import torch

from . import _epx

_b = _epx.balancer


def _load(weight):
    w = torch.as_tensor(weight).detach().cpu()
    if w.dtype not in (torch.int64, torch.float32):
        w = w.float()  # as EPLB does
    return w.contiguous()


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, policy="balanced"):
    """weight: [layers, experts] load per expert. Returns (phy2log [L, P],
    log2phy [L, E, maxcnt] padded with -1, logcnt [L, E])."""
    return _b.rebalance_experts(_load(weight), num_replicas, num_groups, num_nodes, num_gpus, policy)


def evaluate_placement(weight, phy2log, log2phy, logcnt, num_gpus):
    """Returns (max/mean GPU load per layer, same-GPU duplicate replicas per layer)."""
    return _b.evaluate_placement(_load(weight), phy2log.contiguous(), log2phy.contiguous(),
                                 logcnt.contiguous(), num_gpus)


def route_to_replicas(topk_idx, phy2log, log2phy, logcnt, layer, rank, num_gpus, num_nodes=1):
    """Logical expert ids [T, K] -> physical slots [T, K] for this rank (see docs/balancer.md)."""
    return _b.route_to_replicas(topk_idx.contiguous(), phy2log.contiguous(), log2phy.contiguous(),
                                logcnt.contiguous(), layer, rank, num_gpus, num_nodes)
