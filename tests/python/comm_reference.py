"""Inputs every rank can build for every rank (seeded by rank), and what a
rank must receive and get back, computed with plain torch: no communication."""

import torch


def make_inputs(rank, tokens, hidden, topk, experts, dtype, seed=1, salt=0):
    g = torch.Generator().manual_seed(seed * 7919 + rank * 104729)
    T = tokens[rank]
    idx = torch.stack([torch.randperm(experts, generator=g)[:topk] for _ in range(T)]) if T else \
        torch.empty(0, topk, dtype=torch.int64)
    drop = torch.rand(T, topk, generator=g) < 0.1
    idx = idx.masked_fill(drop, -1)
    idx[::7] = -1  # every 7th token goes nowhere
    weights = torch.rand(T, topk, generator=g).masked_fill(idx < 0, 0.0)
    gx = torch.Generator().manual_seed(seed * 31 + rank * 17 + salt * 1000003)
    x = (torch.randn(T, hidden, generator=gx) * 4).to(dtype)
    return x, idx.contiguous(), weights.contiguous()


def expected_receive(rank, ranks, inputs, experts):
    """(rows, local topk_idx, topk_weights, source (rank, token) per row,
    num_recv_tokens_per_expert) for `rank`, rows by source rank, then token."""
    per = experts // ranks
    lo, hi = rank * per, (rank + 1) * per
    rows, idx, w, src = [], [], [], []
    counts = [0] * per
    for s in range(ranks):
        x, i, wt = inputs[s]
        mine = (i >= lo) & (i < hi)
        for t in range(x.shape[0]):
            if not bool(mine[t].any()):
                continue
            rows.append(x[t])
            idx.append(torch.where(mine[t], i[t] - lo, torch.full_like(i[t], -1)))
            w.append(torch.where(mine[t], wt[t], torch.zeros_like(wt[t])))
            src.append((s, t))
            for e in i[t][mine[t]].tolist():
                counts[e - lo] += 1
    H = inputs[0][0].shape[1]
    K = inputs[0][1].shape[1]
    dtype = inputs[0][0].dtype
    stack = (lambda v, shape, dt: torch.stack(v) if v else torch.empty(shape, dtype=dt))
    return (stack(rows, (0, H), dtype), stack(idx, (0, K), torch.int64), stack(w, (0, K), torch.float32),
            src, counts)
