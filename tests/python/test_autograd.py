"""epx.autograd.dispatch / combine: a distributed MoE layer's loss and
gradients (inputs, gate weights, experts) against the same layer computed
densely in one process, on every rank. Run under mpiexec."""

import harness
import torch

import epx
import epx.autograd

H, K = 128, 2


def make_problem(R, seed=3):
    g = torch.Generator().manual_seed(seed)
    E = 2 * R
    tokens = [4 + 2 * r for r in range(R)]
    xs = [torch.randn(T, H, generator=g) for T in tokens]
    gate = torch.randn(H, E, generator=g) / H ** 0.5
    experts = torch.randn(E, H, H, generator=g) / H ** 0.5
    targets = [torch.randn(T, H, generator=g) for T in tokens]
    return E, xs, gate, experts, targets


def route(x, gate):
    scores = torch.softmax(x @ gate, dim=-1)
    w, idx = torch.topk(scores, K, dim=-1)
    return idx, w


def dense(xs, gate, experts, targets):
    """The whole layer in one process: loss and gradients of every tensor."""
    xs = [x.clone().requires_grad_() for x in xs]
    # One copy of the gate per rank, so that its gradients per rank come out.
    gates = [gate.clone().requires_grad_() for _ in xs]
    experts = experts.clone().requires_grad_()
    loss = 0.0
    for x, g, tgt in zip(xs, gates, targets):
        idx, w = route(x, g)
        out = torch.zeros_like(x)
        for k in range(K):
            y = torch.einsum("th,thj->tj", x, experts[idx[:, k]])
            out = out + w[:, k:k + 1] * y
        loss = loss + ((out - tgt) ** 2).sum()
    loss.backward()
    return loss.detach(), [x.grad for x in xs], [g.grad for g in gates], experts.grad


def distributed(group, buffer, x, gate, experts, target, fp8=False):
    R, r = group.size, group.rank
    E = experts.shape[0]
    per = E // R
    x = x.clone().requires_grad_()
    gate = gate.clone().requires_grad_()
    local = experts[r * per:(r + 1) * per].clone().requires_grad_()
    idx, w = route(x, gate)
    layout = buffer.get_dispatch_layout(idx, E)
    recv_x, recv_idx, recv_w, counts, handle = epx.autograd.dispatch(buffer, x, idx, w, layout, fp8=fp8)
    y = torch.zeros_like(recv_x)
    for e in range(per):
        for k in range(K):
            sel = recv_idx[:, k] == e
            y = y.index_add(0, sel.nonzero().flatten(),
                            recv_w[sel, k:k + 1] * (recv_x[sel] @ local[e]))
    out = epx.autograd.combine(buffer, y, handle)
    loss = ((out - target) ** 2).sum()
    loss.backward()
    return loss.detach(), x.grad, gate.grad, local.grad, counts


def close(a, b, tol=1e-4):
    return torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max()) if b.numel() else 1.0))


def test_gradients_match_dense(group):
    R, r = group.size, group.rank
    E, xs, gate, experts, targets = make_problem(R)
    loss, gx, ggate, gexp = dense(xs, gate, experts, targets)
    buf = epx.Buffer(group, num_bytes=1 << 22)
    my_loss, my_gx, my_ggate, my_gexp, counts = distributed(group, buf, xs[r], gate, experts, targets[r])
    total = harness.allreduce_sum(buf, group, my_loss.reshape(1))
    assert close(total, loss.reshape(1), 1e-5), (float(total), float(loss))
    assert close(my_gx, gx[r]), (my_gx - gx[r]).abs().max()
    assert close(my_ggate, ggate[r]), (my_ggate - ggate[r]).abs().max()
    per = E // R
    assert close(my_gexp, gexp[r * per:(r + 1) * per]), (my_gexp - gexp[r * per:(r + 1) * per]).abs().max()
    assert len(counts) == per


def test_fp8_straight_through(group):
    # With fp8 the forward sees e4m3-rounded inputs; gradients still flow
    # (the cast counts as the identity) and stay near the dense ones.
    R, r = group.size, group.rank
    E, xs, gate, experts, targets = make_problem(R)
    loss, gx, _, _ = dense(xs, gate, experts, targets)
    buf = epx.Buffer(group, num_bytes=1 << 22)
    my_loss, my_gx, _, _, _ = distributed(group, buf, xs[r], gate, experts, targets[r], fp8=True)
    assert my_gx is not None and torch.isfinite(my_gx).all()
    assert torch.allclose(my_gx, gx[r], rtol=0.2, atol=0.2 * float(gx[r].abs().max()))


if __name__ == "__main__":
    harness.run([test_gradients_match_dense, test_fp8_straight_through])
