"""Buffer.get_dispatch_layout / dispatch / combine / combine_input from Python
against a torch reference, zero-copy, and bad input raising epx.Error on
every rank. Run under mpiexec (any rank count, virtual nodes too)."""

import gc

import harness
import torch
from comm_reference import expected_receive, make_inputs

import epx

H, K = 256, 4


def shape(group):
    R = group.size
    return [5 + 3 * r for r in range(R)], 4 * R  # tokens per rank, experts


def shm_mapping(address):
    """The /proc/self/maps path of the mapping that holds `address` ('' if anonymous)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else ""
    return None


def check_dispatch_combine(group, dtype):
    R, r = group.size, group.rank
    tokens, E = shape(group)
    inputs = [make_inputs(s, tokens, H, K, E, dtype) for s in range(R)]
    x, idx, w = inputs[r]
    buf = epx.Buffer(group, num_bytes=1 << 22)
    layout = buf.get_dispatch_layout(idx, E)
    per = E // R
    want_per_rank = torch.tensor([int(((idx >= d * per) & (idx < (d + 1) * per)).any(1).sum())
                                  for d in range(R)], dtype=torch.int32)
    assert torch.equal(layout.num_tokens_per_rank, want_per_rank), layout.num_tokens_per_rank
    assert torch.equal(layout.num_tokens_per_expert,
                       torch.bincount(idx[idx >= 0], minlength=E).to(torch.int32))
    assert layout.is_token_in_rank.dtype == torch.bool and layout.is_token_in_rank.shape == (x.shape[0], R)

    res = buf.dispatch(x, idx, w, layout)
    rows, ridx, rw, src, counts = expected_receive(r, R, inputs, E)
    assert res.x.dtype == dtype and torch.equal(res.x, rows)
    assert torch.equal(res.topk_idx, ridx)
    assert torch.equal(res.topk_weights, rw)
    assert res.num_recv_tokens_per_expert == counts, (res.num_recv_tokens_per_expert, counts)
    assert res.x_scales is None
    assert res.handle.num_tokens == x.shape[0] and res.handle.num_recv_tokens == rows.shape[0]

    # Expert outputs: each rank scales what it got by (rank + 1); the owner
    # gets sum over the ranks that hold one of the token's experts.
    y = (res.x.float() * (r + 1)).to(dtype)
    out = buf.combine(y, res.handle)
    holders = torch.zeros(x.shape[0])
    for d in range(R):
        holders += ((idx >= d * per) & (idx < (d + 1) * per)).any(1).float() * (d + 1)
    want = (x.float() * holders[:, None]).to(dtype)
    # f32: the sum order differs from the reference's one product (docs/comm.md).
    tol = dict(rtol=1e-6, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.allclose(out.float(), want.float(), **tol), (out - want).abs().max()

    # The cached dispatch: the same routing, a new payload.
    x2 = make_inputs(r, tokens, H, K, E, dtype, salt=1)[0]
    again = buf.dispatch(x2, res.handle)
    rows2 = [make_inputs(s, tokens, H, K, E, dtype, salt=1)[0][t] for s, t in src]
    assert torch.equal(again.x, torch.stack(rows2) if rows2 else torch.empty(0, H, dtype=dtype))
    assert again.topk_idx is None


def test_dispatch_combine_f32(group):
    check_dispatch_combine(group, torch.float32)


def test_dispatch_combine_bf16(group):
    check_dispatch_combine(group, torch.bfloat16)


def test_fp8_dispatch(group):
    R, r = group.size, group.rank
    tokens, E = shape(group)
    inputs = [make_inputs(s, tokens, H, K, E, torch.bfloat16) for s in range(R)]
    x, idx, w = inputs[r]
    buf = epx.Buffer(group, num_bytes=1 << 22)
    res = buf.dispatch(x, idx, w, buf.get_dispatch_layout(idx, E), fp8=True)
    rows = expected_receive(r, R, inputs, E)[0]
    q, s = epx.per_token_cast_to_fp8(rows)  # the same cast, bit for bit
    assert res.x.element_size() == 1 and res.x.shape == (rows.shape[0], H)
    assert torch.equal(res.x.view(torch.uint8), q.view(torch.uint8))
    assert torch.equal(res.x_scales, s)
    back = epx.per_token_cast_back(res.x, res.x_scales, torch.float32)
    assert torch.allclose(back, rows.float(), rtol=0.07, atol=1e-3)
    # Pre-quantised input as DeepEP passes it: a tuple (x, x_scales).
    qx, sx = epx.per_token_cast_to_fp8(x)
    res2 = buf.dispatch((qx, sx), idx, w, buf.get_dispatch_layout(idx, E))
    assert torch.equal(res2.x.view(torch.uint8), res.x.view(torch.uint8))


def test_zero_copy(group):
    R, r = group.size, group.rank
    tokens, E = shape(group)
    x, idx, w = make_inputs(r, tokens, H, K, E, torch.float32)
    # An input is viewed where it is, not copied.
    assert epx._epx._data_address(x) == x.data_ptr()
    buf = epx.Buffer(group, num_bytes=1 << 22)
    res = buf.dispatch(x, idx, w, buf.get_dispatch_layout(idx, E))
    recv = res.x
    if recv.numel():
        # A result lies in the receive space: the node's shared memory (memfds).
        path = shm_mapping(recv.data_ptr())
        assert path is not None and path.startswith("/memfd:epx-region-"), path
    # It stays valid after the result object (and its Handle) is gone.
    handle = res.handle
    saved = recv.clone()
    del res
    gc.collect()
    assert torch.equal(recv, saved)
    # combine_input: torch writes the expert outputs into the receive space
    # and combine reads them there.
    y = buf.combine_input(handle, H, torch.float32)
    assert y.shape == (recv.shape[0], H) and y.dtype == torch.float32
    if y.numel():
        assert shm_mapping(y.data_ptr()).startswith("/memfd:epx-region-")
    torch.mul(recv, 2.0, out=y)
    out = buf.combine(y, handle)
    # The dispatched rows reused in place as y, modified by torch in place.
    recv.mul_(3.0)
    out3 = buf.combine(recv, handle)
    holders = torch.zeros(x.shape[0])
    per = E // R
    for d in range(R):
        holders += ((idx >= d * per) & (idx < (d + 1) * per)).any(1).float()
    assert torch.equal(out, x * 2 * holders[:, None])
    assert torch.allclose(out3, x * 3 * holders[:, None], rtol=1e-6, atol=0)


def expect_error_everywhere(fn, code, local_words=None):
    try:
        fn()
    except epx.Error as e:
        assert e.code == code, (e.code, str(e))
        # Agreed by every rank before data moved: the buffer stays usable.
        assert e.poisoned is False, str(e)
        if local_words:
            assert local_words in str(e), str(e)
        return str(e)
    raise AssertionError("no epx.Error raised")


def test_bad_input_every_rank(group):
    R, r = group.size, group.rank
    tokens, E = shape(group)
    x, idx, w = make_inputs(r, tokens, H, K, E, torch.float32)
    buf = epx.Buffer(group, num_bytes=1 << 22)
    # One rank's expert id out of range: every rank raises.
    bad = idx.clone()
    if r == R - 1:
        bad[0, 0] = E
    msg = expect_error_everywhere(lambda: buf.get_dispatch_layout(bad, E), epx.ErrorCode.InvalidArgument)
    assert "topk_idx" in msg, msg
    layout = buf.get_dispatch_layout(idx, E)
    # One rank's x is not contiguous: every rank raises, that rank says why.
    xt = x if r != 0 else torch.randn(H, x.shape[0]).t()
    expect_error_everywhere(lambda: buf.dispatch(xt, idx, w, layout), epx.ErrorCode.InvalidArgument,
                            "not contiguous" if r == 0 else None)
    # A dtype epx does not move, on one rank.
    wt = w if r != R - 1 else w.double().to(torch.complex64)
    expect_error_everywhere(lambda: buf.dispatch(x, idx, wt, layout), epx.ErrorCode.InvalidArgument,
                            "complex64" if r == R - 1 else None)
    # The buffer stays usable.
    res = buf.dispatch(x, idx, w, layout)
    buf.combine(res.x, res.handle)
    assert isinstance(epx.Error("x"), RuntimeError)


def test_low_latency(group):
    R, r = group.size, group.rank
    T, E = 6, 2 * R
    buf = epx.Buffer(group, low_latency=True, max_tokens_per_rank=8, hidden=H, num_experts=E)
    inputs = [make_inputs(s, [T] * R, H, 2, E, torch.bfloat16) for s in range(R)]
    x, idx, w = inputs[r]
    d = buf.low_latency_dispatch(x, idx, use_fp8=False, return_recv_hook=True)
    d.hook()
    count = d.count
    assert count.shape == (E // R,)
    per = E // R
    for e in range(per):
        got = d.x[e, : int(count[e])]
        want = [inputs[s][0][t] for s in range(R) for t in range(T) if (inputs[s][1][t] == r * per + e).any()]
        assert len(want) == int(count[e])
        if want:
            assert torch.equal(got, torch.stack(want))
    c = buf.low_latency_combine(d.x, idx, w, d.handle)
    assert c.hook is None
    want = (x.float() * w.sum(1, keepdim=True)).to(torch.bfloat16)
    assert torch.allclose(c.x.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_group(group):
    assert 0 <= group.rank < group.size
    assert group.local_size * group.num_nodes == group.size
    assert group.local_rank == group.node_ranks.index(group.rank)


if __name__ == "__main__":
    harness.run([test_group, test_dispatch_combine_f32, test_dispatch_combine_bf16, test_fp8_dispatch,
                 test_zero_copy, test_bad_input_every_rank, test_low_latency])
