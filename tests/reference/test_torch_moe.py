#!/usr/bin/python3
"""Self-check of the PyTorch reference (plain asserts; about 10-20 s on one core).

  python3 tests/reference/test_torch_moe.py [-v]

Last line: "N passed, M failed"; exit code 0 when nothing failed.
"""
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe as R  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "tiny_test.yaml")
VERBOSE = "-v" in sys.argv


def note(msg):
    print("    " + msg)


def tiny_cfg(**over):
    sets = [f"{k.replace('__', '.')}={v}" for k, v in over.items()]
    return R.load_config(TINY, sets)


# (a) ---------------------------------------------------------------------------
def test_adamw_matches_torch_optim():
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (13,), (3, 4), (6,)]
    wd, b1, b2, eps = 0.1, 0.9, 0.95, 1e-8
    ours = {f"p{i}": torch.randn(s, generator=g) for i, s in enumerate(shapes)}
    theirs = [ours[f"p{i}"].clone().requires_grad_(True) for i in range(len(shapes))]
    opt = torch.optim.AdamW([{"params": [p for p in theirs if p.dim() == 2], "weight_decay": wd},
                             {"params": [p for p in theirs if p.dim() != 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(b1, b2), eps=eps)
    mine = R.AdamW(ours, b1, b2, eps, wd)
    tc = dict(lr=3e-2, min_lr=3e-3, warmup_steps=2, max_steps=8)
    worst_abs = worst_rel = 0.0
    for t in range(1, 9):
        grads = {f"p{i}": torch.randn(s, generator=g) * (0.0 if (t == 3 and i == 1) else 1.0)
                 for i, s in enumerate(shapes)}
        lr_t = R.lr_at(t, tc)
        mine.step(t, lr_t, grads)
        for i, p in enumerate(theirs):
            p.grad = grads[f"p{i}"].clone()
        for grp in opt.param_groups:
            grp["lr"] = lr_t
        opt.step()
        for i, p in enumerate(theirs):
            d = (ours[f"p{i}"] - p.detach()).abs()
            worst_abs = max(worst_abs, float(d.max()))
            worst_rel = max(worst_rel, float((d / p.detach().abs().clamp_min(1e-3)).max()))
    note(f"hand AdamW vs torch.optim.AdamW, 8 steps: max |diff| {worst_abs:.2e}, max rel {worst_rel:.2e}")
    assert worst_abs < 1e-6, worst_abs


def test_adamw_updates_zero_grad_and_decays_only_2d():
    p = {"w": torch.ones(2, 2), "n": torch.ones(3)}
    opt = R.AdamW(p, 0.9, 0.95, 1e-8, 0.5)
    opt.step(1, 0.1, {"w": torch.zeros(2, 2), "n": torch.zeros(3)})
    assert torch.allclose(p["w"], torch.full((2, 2), 0.95)), p["w"]   # decayed, m = v = 0
    assert torch.equal(p["n"], torch.ones(3))                           # 1-D: no decay


def test_lr_schedule():
    tc = dict(lr=1e-2, min_lr=1e-3, warmup_steps=4, max_steps=14)
    assert R.lr_at(1, tc) == 1e-2 * 1 / 4 and R.lr_at(4, tc) == 1e-2
    assert abs(R.lr_at(9, tc) - (1e-3 + 0.5 * 9e-3)) < 1e-15
    assert abs(R.lr_at(14, tc) - 1e-3) < 1e-15
    tc0 = dict(lr=1e-2, min_lr=1e-3, warmup_steps=0, max_steps=10)
    assert abs(R.lr_at(1, tc0) - (1e-3 + 0.5 * 9e-3 * (1 + math.cos(math.pi / 10)))) < 1e-15


def test_grad_clip():
    g = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]])}
    n = R.grad_norm_and_clip(g, 1.0)
    assert n == 5.0
    c = R.f32(1.0 / (5.0 + 1e-6))
    assert torch.equal(g["a"], torch.tensor([3.0, 0.0]) * torch.tensor(c, dtype=torch.float32))
    g2 = {"a": torch.tensor([0.3, 0.4])}
    assert abs(R.grad_norm_and_clip(g2, 1.0) - 0.5) < 1e-7 and torch.equal(g2["a"], torch.tensor([0.3, 0.4]))


# (b) ---------------------------------------------------------------------------
def _fd_check(cfg, seed, label):
    mc = cfg["model"]
    w = R.init_weights(mc, seed, bias_range=0.05, dtype=torch.float64)
    # larger weights than init_std so that every term matters in the check
    for n in w:
        if not n.endswith("layernorm.weight") and n != "model.norm.weight" and "bias" not in n:
            w[n] = w[n] * 10
        elif "layernorm" in n or n == "model.norm.weight":
            w[n] = w[n] + 0.1 * torch.randn(w[n].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = R.Model(mc, w, torch.float64)
    g = torch.Generator().manual_seed(seed)
    b, T = 2, cfg["train"]["seq_len"]
    x = torch.randint(0, mc["vocab_size"], (b, T), generator=g)
    y = torch.randint(0, mc["vocab_size"], (b, T), generator=g)

    def loss_of(P):
        l, c = m.forward_loss_sum(x, y, P)
        return l / (b * T), c

    l0, c0 = loss_of(m.params)
    l0.backward()
    for bn, bv in m.buffers.items():
        assert not bv.requires_grad, bn
    h = 1e-6
    worst = 0.0
    checked = 0
    for name, p in m.params.items():
        flat = p.detach().view(-1)
        picks = torch.randperm(flat.numel(), generator=g)[:3].tolist()
        for i in picks:
            P = {k: v.detach() for k, v in m.params.items()}
            pp = P[name].clone().view(-1)
            orig = float(pp[i])
            pp[i] = orig + h
            P[name] = pp.view(p.shape)
            lp, cp = loss_of(P)
            pp = pp.clone()
            pp[i] = orig - h
            P[name] = pp.view(p.shape)
            lm, cm = loss_of(P)
            if any(not torch.equal(a, b_) for a, b_ in zip(cp + cm, c0 + c0)):
                continue  # a routing flip under the perturbation: not differentiable there
            fd = (float(lp) - float(lm)) / (2 * h)
            an = float(p.grad.view(-1)[i])
            err = abs(fd - an) / max(1e-4, abs(fd) + abs(an))
            worst = max(worst, err)
            checked += 1
            if VERBOSE or err > 1e-5:
                note(f"{label} {name}[{i}]: autograd {an:.10e} fd {fd:.10e} rel {err:.1e}")
    # the router weight must get a nonzero gradient (through the gate weights w)
    for li in m.moe_layers:
        gr = m.params[f"model.layers.{li}.mlp.gate.weight"].grad
        assert gr is not None and float(gr.abs().max()) > 0, "router weight got no gradient"
    note(f"{label}: {checked} finite-difference checks in float64, worst rel err {worst:.1e}")
    assert checked > 50 and worst < 1e-5, (checked, worst)


def test_model_grad_vs_finite_differences_sigmoid_grouped():
    _fd_check(tiny_cfg(train__seq_len=8), 3, "sigmoid n_group=2")


def test_model_grad_vs_finite_differences_softmax_ungrouped():
    _fd_check(tiny_cfg(train__seq_len=8, model__score_function="softmax", model__n_group=1,
                       model__top_k=3, model__routed_scaling_factor=2.5, model__num_shared_experts=0), 4,
              "softmax n_group=1 k=3 no shared")


def test_microbatch_accumulation_equals_whole_batch():
    cfg = tiny_cfg()
    w = R.init_weights(cfg["model"], 5, dtype=torch.float64)
    tr = R.Trainer(cfg, w, torch.float64)
    loss, grads, counts = tr.compute_grads(3)
    m = R.Model(cfg["model"], w, torch.float64)
    x, y = tr.data.batch(3, 0, tr.B, tr.B, tr.T)
    l, c = m.forward_loss_sum(x, y)
    (l / (tr.B * tr.T)).backward()
    assert abs(float(l) / (tr.B * tr.T) - loss) < 1e-12
    for n, p in m.params.items():
        assert torch.allclose(p.grad, grads[n], rtol=1e-10, atol=1e-14), n
    assert [a.tolist() for a in c] == [a.tolist() for a in counts]
    assert sum(counts[0].tolist()) == tr.B * tr.T * cfg["model"]["top_k"]


# (c) ---------------------------------------------------------------------------
def _route(vals, **mc_over):
    """s = 0.5 everywhere (logits 0), bias = vals - 0.5: s + b = vals exactly (dyadic)."""
    mc = dict(R.DEFAULTS["model"])
    mc.update(mc_over)
    mc["num_experts"] = len(vals)
    v = torch.tensor(vals, dtype=torch.float32)
    logits = torch.zeros(1, len(vals), requires_grad=True)
    idx, w, s = R.route(logits, v - 0.5, mc)
    return idx[0].tolist(), w, logits


def test_routing_ties_to_lower_index():
    idx, w, _ = _route([0.25, 0.5, 0.5, 0.5, 0.125, 0.5, 0.75, 0.5], top_k=3)
    assert idx == [6, 1, 2], idx
    idx, _, _ = _route([0.5] * 8, top_k=4)
    assert idx == [0, 1, 2, 3], idx


def test_routing_group_limited():
    # 4 groups of 2.  Group scores (top-2 sums): g0 1.0, g1 0.9375, g2 1.0, g3 0.75.
    vals = [0.5, 0.5, 0.875, 0.0625, 0.75, 0.25, 0.375, 0.375]
    # Two groups: g0 and g2 (g1 has the single best expert but a lower group score).
    idx, w, _ = _route(vals, n_group=4, topk_group=2, top_k=2, routed_scaling_factor=2.5)
    assert idx == [4, 0], idx
    assert torch.equal(w, torch.tensor([[1.25, 1.25]])), w  # s = 0.5 each: 0.5/1.0 * 2.5
    # One group: g0 and g2 tie at 1.0 -> the lower, g0.
    idx, _, _ = _route(vals, n_group=4, topk_group=1, top_k=2)
    assert idx == [0, 1], idx
    # Group score is the sum of the two highest, not the max nor the sum of all:
    # g0 [0.875, 0.25, 0.25, 0.25] (top2 1.125, all 1.625) vs g1 [0.5625, 0.5 x3] (top2 1.0625, all 2.0625).
    idx, _, _ = _route([0.875, 0.25, 0.25, 0.25, 0.5625, 0.5, 0.5, 0.5], n_group=2, topk_group=1, top_k=2)
    assert idx == [0, 1], idx
    # ... and not the max: g0 [0.875, 0.0625 ...] top2 0.9375 vs g1 [0.5625, 0.5 ...] top2 1.0625.
    idx, _, _ = _route([0.875, 0.0625, 0.0625, 0.0625, 0.5625, 0.5, 0.5, 0.5], n_group=2, topk_group=1, top_k=3)
    assert idx == [4, 5, 6], idx


def test_routing_gate_weights_from_unbiased_scores():
    mc = dict(R.DEFAULTS["model"])
    mc.update(num_experts=4, top_k=2, routed_scaling_factor=1.5)
    logits = torch.tensor([[0.3, -0.2, 1.0, 0.1]], requires_grad=True)
    bias = torch.tensor([0.0, 0.6, 0.0, 0.0])          # lifts expert 1 into the top 2
    idx, w, s = R.route(logits, bias, mc)
    assert idx[0].tolist() == [1, 2], idx
    sg = torch.sigmoid(logits.detach())[0]
    S = sg[1] + sg[2]
    assert torch.equal(w[0], torch.stack([sg[1] / S * 1.5, sg[2] / S * 1.5])), (w, sg)
    (w * torch.tensor([[1.0, 2.0]])).sum().backward()   # w.sum() is the constant 1.5
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    # softmax scores
    mc["score_function"] = "softmax"
    idx, w, s = R.route(logits.detach(), torch.zeros(4), mc)
    assert torch.allclose(s.sum(-1), torch.ones(1)) and idx[0].tolist() == [2, 0]


def test_bias_update():
    b = {"model.layers.1.mlp.gate.e_score_correction_bias": torch.zeros(4)}
    R.bias_update(b, [torch.tensor([3, 1, 2, 2])], [1], 0.001)
    r = R.f32(0.001)
    assert b["model.layers.1.mlp.gate.e_score_correction_bias"].tolist() == [-r, r, 0.0, 0.0]


# (d) ---------------------------------------------------------------------------
def test_rope_matches_complex_rotation():
    T, hd, theta = 11, 8, 10000.0
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, T, hd, generator=g, dtype=torch.float64)
    cos, sin = R.rope_tables(T, hd, theta, torch.float64)
    got = R.apply_rope(x, cos, sin)
    half = hd // 2
    z = torch.complex(x[..., :half], x[..., half:])
    ang = torch.tensor([[p * theta ** (-2.0 * j / hd) for j in range(half)] for p in range(T)], dtype=torch.float64)
    zr = z * torch.polar(torch.ones_like(ang), ang)
    want = torch.cat([zr.real, zr.imag], dim=-1)
    err = float((got - want).abs().max())
    note(f"RoPE vs complex rotation (float64): max |diff| {err:.1e}")
    assert err < 1e-12
    assert torch.equal(got[:, 0], x[:, 0])  # position 0 is not rotated


def test_attention_is_causal_and_per_sequence():
    cfg = tiny_cfg()
    w = R.init_weights(cfg["model"], 1, dtype=torch.float64)
    m = R.Model(cfg["model"], w, torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 16), generator=g)
    y = torch.randint(0, 256, (2, 16), generator=g)
    # losses of the first 8 positions don't depend on later tokens nor on the other sequence
    l_a, _ = m.forward_loss_sum(x[:1, :8], y[:1, :8])
    x2 = x.clone()
    x2[0, 8:] = (x2[0, 8:] + 1) % 256
    l_b, _ = m.forward_loss_sum(x2[:1, :8], y[:1, :8])
    assert float(l_a) == float(l_b)
    l_both, _ = m.forward_loss_sum(x, y)
    l0, _ = m.forward_loss_sum(x[:1], y[:1])
    l1, _ = m.forward_loss_sum(x[1:], y[1:])
    assert abs(float(l_both) - float(l0) - float(l1)) < 1e-9


# others ------------------------------------------------------------------------
def test_safetensors_roundtrip_and_bf16():
    cfg = tiny_cfg()
    w = R.init_weights(cfg["model"], 9)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "w.safetensors")
        R.save_safetensors(p, w, {"format": "pt"})
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            assert n % 8 == 0
        back = R.load_safetensors(p)
        assert set(back) == set(w) and all(torch.equal(back[k], w[k]) for k in w)
        # a hand-written BF16 file
        import json
        import struct
        vals = torch.tensor([1.0, -2.5, 3.140625, 0.0], dtype=torch.float32)
        bits = (vals.view(torch.int32) >> 16).to(torch.int16)
        data = bits.numpy().tobytes()
        hdr = json.dumps({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(data)]}}).encode()
        q = os.path.join(d, "b.safetensors")
        with open(q, "wb") as f:
            f.write(struct.pack("<Q", len(hdr)) + hdr + data)
        got = R.load_safetensors(q)["x"]
        assert torch.equal(got, vals.view(2, 2)), got


def test_config_errors_and_defaults():
    cfg = R.parse_config("model: {hidden_size: 32}\n")
    assert cfg["model"]["num_experts"] == 8 and cfg["train"]["beta2"] == 0.95 and cfg["data"]["format"] == "bytes"
    for bad in ["model: {nope: 1}", "model: {top_k: 9}", "model: {hidden_size: 30}", "model: {hidden_size: 24, num_heads: 8}",
                "model: {vocab_size: 300}", "model: {top_k: x}", "oops: {a: 1}",
                "model: {n_group: 8}", "parallel: {dp: 3, ep: 2}"]:
        try:
            R.parse_config(bad)
        except R.ConfigError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_bench_model_matches_reference_loss():
    import torch_train_bench as TB
    cfg = tiny_cfg()
    w = R.init_weights(cfg["model"], 11)
    bm = TB.build(cfg, w)
    rm = R.Model(cfg["model"], w)
    data = R.Data(cfg["data"], 256)
    x, y = data.batch(0, 0, 4, 4, 16)
    lb = float(bm(x, y))
    lr_, _ = rm.forward_loss_sum(x, y)
    rel = abs(lb - float(lr_)) / abs(float(lr_))
    note(f"nn.Module bench model vs functional reference, loss sum rel diff {rel:.1e}")
    assert rel < 1e-5


def test_training_runs_and_loss_falls():
    cfg = tiny_cfg()
    tr = R.Trainer(cfg, R.init_weights(cfg["model"], 7))
    recs = [tr.step(s) for s in range(8)]
    assert recs[0]["step"] == 1 and recs[0]["lr"] == 1e-2 / 2
    assert recs[-1]["loss"] < recs[0]["loss"] - 0.5, [r["loss"] for r in recs]
    assert all(sum(c) == 64 * 2 for r in recs for c in r["expert_counts"])
    note("tiny 8 steps: " + " ".join(f"{r['loss']:.3f}" for r in recs))


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"PASS {name}")
            passed += 1
        except Exception:
            print(f"FAIL {name}")
            traceback.print_exc()
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
