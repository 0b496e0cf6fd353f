"""A PyTorch MoE layer (router, top-k, experts as nn.Linear) with its experts
spread over the ranks through epx's dispatch and combine, trained a few SGD
steps on random data; every step, its loss and every gradient are checked
against the same layer computed densely in one process.

    build/bin/epxrun -n 4 -- python3 examples/python/moe_layer.py [--dtype bf16] [--fp8]

Rank 0 prints one line per step and a last line "moe_layer: OK ..." (or
FAILED, with a non-zero exit status on every rank).
"""

import argparse
import copy
import os
import sys

import torch
from torch import nn

try:
    import epx
except ImportError:  # run from a build tree without PYTHONPATH=build/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "python"))
    import epx
import epx.autograd


class MoE(nn.Module):
    """Router (a linear layer, softmax, top-k) and E experts (linear, SiLU, linear)."""

    def __init__(self, hidden, ffn, experts, topk):
        super().__init__()
        self.topk = topk
        self.router = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, ffn), nn.SiLU(), nn.Linear(ffn, hidden)) for _ in range(experts))

    def route(self, x):
        weights, idx = torch.topk(torch.softmax(self.router(x), dim=-1), self.topk, dim=-1)
        return idx, weights / weights.sum(-1, keepdim=True)


def dense_forward(moe, x, dtype):
    """The reference: every token through its top-k experts in one process,
    with the same roundings as the distributed path (activations and expert
    outputs rounded to `dtype` where epx moves them)."""
    idx, w = moe.route(x)
    xin = x.to(dtype).float()
    out = torch.zeros_like(x)
    for e, expert in enumerate(moe.experts):
        tok, k = (idx == e).nonzero(as_tuple=True)
        if tok.numel():
            y = (w[tok, k, None] * expert(xin[tok])).to(dtype).float()
            out = out.index_add(0, tok, y)
    return out


def epx_forward(moe, buffer, x, rank, per_rank, dtype, fp8):
    """Dispatch each token to the ranks of its experts, run the local experts
    on what arrived, combine the weighted outputs back to the token's rank."""
    E = len(moe.experts)
    idx, w = moe.route(x)
    layout = buffer.get_dispatch_layout(idx, E)
    recv_x, recv_idx, recv_w, _, handle = epx.autograd.dispatch(buffer, x.to(dtype), idx, w, layout, fp8=fp8)
    xin = recv_x.float()
    y = torch.zeros(recv_x.shape[0], x.shape[1])
    for e in range(per_rank):
        rows, k = (recv_idx == e).nonzero(as_tuple=True)  # local expert id e
        if rows.numel():
            y = y.index_add(0, rows, recv_w[rows, k, None] * moe.experts[rank * per_rank + e](xin[rows]))
    # Each row's outputs are summed over its experts here, then over ranks by combine.
    return epx.autograd.combine(buffer, y.to(dtype), handle).float()


def allreduce_sum(buffer, group, t):
    """Sum over ranks, the same bits on every rank, made of one dispatch (epx
    has no allreduce and mpi4py may be absent): the tensor goes to every rank
    as one token routed to one expert per rank; each rank sums its R rows."""
    R = group.size
    idx = torch.arange(R).reshape(1, R)
    layout = buffer.get_dispatch_layout(idx, R)
    rows = buffer.dispatch(t.reshape(1, -1).float().contiguous(), idx, torch.ones(1, R), layout).x
    return rows.sum(0).reshape(t.shape)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tokens", type=int, default=64, help="tokens per rank")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--ffn", type=int, default=64)
    p.add_argument("--experts-per-rank", type=int, default=2)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="what dispatch and combine move")
    p.add_argument("--fp8", action="store_true", help="dispatch in e4m3 (loss checked loosely)")
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    tol = 1e-4 if dtype == torch.float32 and not args.fp8 else 5e-2

    group = epx.Group()
    R, rank = group.size, group.rank
    E = args.experts_per_rank * R
    torch.manual_seed(0)  # the same initial layer on every rank
    reference = MoE(args.hidden, args.ffn, E, args.topk)
    model = copy.deepcopy(reference)  # this rank uses the router and its own experts
    buffer = epx.Buffer(group, num_bytes=64 << 20)
    mine = [p for e in range(args.experts_per_rank) for p in model.experts[rank * args.experts_per_rank + e].parameters()]
    ref_mine = [p for e in range(args.experts_per_rank)
                for p in reference.experts[rank * args.experts_per_rank + e].parameters()]

    worst = 0.0
    for step in range(args.steps):
        # Every rank's batch, so that each rank can run the dense reference.
        gen = torch.Generator().manual_seed(1000 + step)
        xs = [torch.randn(args.tokens, args.hidden, generator=gen) for _ in range(R)]
        targets = [torch.randn(args.tokens, args.hidden, generator=gen) for _ in range(R)]
        n = args.tokens * R  # the loss is the mean over all ranks' tokens

        model.zero_grad()
        out = epx_forward(model, buffer, xs[rank], rank, args.experts_per_rank, dtype, args.fp8)
        local_loss = ((out - targets[rank]) ** 2).sum() / n
        local_loss.backward()
        loss = float(allreduce_sum(buffer, group, local_loss.detach().reshape(1)))
        # Experts got the gradient of every rank's tokens through combine's
        # backward; the replicated router needs the sum over ranks.
        for prm in model.router.parameters():
            prm.grad = allreduce_sum(buffer, group, prm.grad)

        reference.zero_grad()
        ref_loss = sum(((dense_forward(reference, x, dtype) - t) ** 2).sum() for x, t in zip(xs, targets)) / n
        ref_loss.backward()

        pairs = list(zip(model.router.parameters(), reference.router.parameters())) + list(zip(mine, ref_mine))
        grad_diff = max(float((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp_min(1e-30)) for a, b in pairs)
        loss_diff = abs(loss - float(ref_loss)) / abs(float(ref_loss))
        worst = max(worst, grad_diff, loss_diff)
        if rank == 0:
            print(f"step {step}: loss epx {loss:.7f}  dense {float(ref_loss):.7f}  "
                  f"max relative gradient difference {grad_diff:.2e}", flush=True)
        with torch.no_grad():
            for prm in list(model.router.parameters()) + mine:
                prm -= args.lr * prm.grad
            for prm in reference.parameters():
                prm -= args.lr * prm.grad

    ok = worst <= tol
    if rank == 0:
        verdict = "OK" if ok else "FAILED"
        print(f"moe_layer: {verdict}, {R} ranks, {E} experts, {args.dtype}{' fp8' if args.fp8 else ''}: "
              f"epx matches the dense layer to {worst:.1e} (tolerance {tol:.0e}) over {args.steps} steps", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
