"""Dispatch and combine as torch.autograd.Functions.

Both directions are collective: every rank must run the forward calls in the
same order, and every rank must backpropagate through them (the backward of
a dispatch is a combine on every rank, the backward of a combine a cached
dispatch), so a rank whose loss does not depend on its received rows still
has to keep them in its graph.
"""

import torch

from . import _epx


class _Dispatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, buffer, x, topk_idx, topk_weights, layout, fp8, out):
        r = buffer.dispatch(x, topk_idx, topk_weights, layout, fp8=fp8)
        recv_x = r.x
        if fp8:
            # Dequantised in x's dtype, so gradients can flow; the backward
            # treats the cast as the identity (straight-through).
            recv_x = _epx.per_token_cast_back(r.x, r.x_scales, x.dtype)
        ctx.buffer = buffer
        ctx.handle = r.handle
        ctx.save_for_backward(r.topk_idx)
        ctx.mark_non_differentiable(r.topk_idx)
        out["handle"] = r.handle
        out["num_recv_tokens_per_expert"] = list(r.num_recv_tokens_per_expert)
        return recv_x, r.topk_idx, r.topk_weights

    @staticmethod
    def backward(ctx, grad_x, grad_idx, grad_weights):
        (recv_topk_idx,) = ctx.saved_tensors
        # Always both combines, in this order, whatever this rank needs: the
        # peers run the same two calls.
        gx = ctx.buffer.combine(grad_x.contiguous(), ctx.handle)
        # A (token, k) pair reached exactly one rank with a local id there;
        # elsewhere the weight was a constant 0, so its gradient is dropped
        # before the sum over ranks.
        gw = grad_weights.float().masked_fill(recv_topk_idx < 0, 0.0).contiguous()
        gw = ctx.buffer.combine(gw, ctx.handle)
        return None, gx, None, gw, None, None, None


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, buffer, y, handle):
        ctx.buffer = buffer
        ctx.handle = handle
        return buffer.combine(y, handle)

    @staticmethod
    def backward(ctx, grad_out):
        gy = ctx.buffer.dispatch(grad_out.contiguous(), ctx.handle).x
        return None, gy, None


def dispatch(buffer, x, topk_idx, topk_weights, layout, fp8=False):
    """Buffer.dispatch with gradients for x and topk_weights.

    Returns (recv_x, recv_topk_idx, recv_topk_weights,
    num_recv_tokens_per_expert, handle). recv_x views the buffer's receive
    space (with fp8: a dequantised copy in x's dtype).
    """
    out = {}
    recv_x, recv_idx, recv_w = _Dispatch.apply(buffer, x, topk_idx, topk_weights, layout, fp8, out)
    return recv_x, recv_idx, recv_w, out["num_recv_tokens_per_expert"], out["handle"]


def combine(buffer, y, handle):
    """Buffer.combine with gradients for y: returns the [T, H] sum per token."""
    return _Combine.apply(buffer, y, handle)
