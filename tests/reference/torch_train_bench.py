#!/usr/bin/python3
"""PyTorch eager CPU training of the same MoE model, as a speed reference.

  python3 tests/reference/torch_train_bench.py --config CFG.yaml --steps N --threads T [--set ...]

Ordinary PyTorch: nn.Module layers under DeepSeek-V3's HF names (the state
dict loads an epx / make_init safetensors file), autograd, torch.optim.AdamW
(weight decay on 2-D parameters only), clip_grad_norm_, the same LR schedule,
data order, micro-batch accumulation and aux-loss-free bias update.  Routing
uses torch.topk (no explicit tie rule), so this is for timing, not for
bit-level comparison (torch_moe.py is the exact reference).

Times `--steps` steps after 2 warmup steps and prints one JSON line:
{"tokens_per_s": ..., "ms_per_step": ..., "threads": T, ...}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe  # noqa: E402  (re-executes under /usr/bin/python3 if torch is missing)
import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, H, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(H))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, mc):
        super().__init__()
        H = mc["hidden_size"]
        self.nh = mc["num_heads"]
        self.hd = H // self.nh
        self.q_proj = nn.Linear(H, H, bias=False)
        self.k_proj = nn.Linear(H, H, bias=False)
        self.v_proj = nn.Linear(H, H, bias=False)
        self.o_proj = nn.Linear(H, H, bias=False)

    def forward(self, x, cos, sin, mask):
        b, T, H = x.shape
        q = self.q_proj(x).view(b, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, T, self.nh, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, T, self.nh, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, T, H))


class MLP(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    def __init__(self, mc):
        super().__init__()
        self.mc = mc
        E, H = mc["num_experts"], mc["hidden_size"]
        self.weight = nn.Parameter(torch.empty(E, H))
        self.register_buffer("e_score_correction_bias", torch.zeros(E))

    def forward(self, x):
        mc = self.mc
        E, K, G, TG = mc["num_experts"], mc["top_k"], mc["n_group"], mc["topk_group"]
        logits = F.linear(x, self.weight)
        s = logits.sigmoid() if mc["score_function"] == "sigmoid" else logits.softmax(-1)
        sel = s.detach() + self.e_score_correction_bias
        if G > 1:
            N = x.shape[0]
            gscore = sel.view(N, G, -1).topk(2, dim=-1)[0].sum(-1)
            gidx = gscore.topk(TG, dim=-1)[1]
            gmask = torch.zeros_like(gscore).scatter_(1, gidx, 1)
            emask = gmask.unsqueeze(-1).expand(N, G, E // G).reshape(N, E)
            sel = sel.masked_fill(emask == 0, float("-inf"))
        idx = sel.topk(K, dim=-1)[1]
        w = s.gather(1, idx)
        w = w / w.sum(-1, keepdim=True) * mc["routed_scaling_factor"]
        return idx, w


class MoE(nn.Module):
    def __init__(self, mc):
        super().__init__()
        H, MI, S = mc["hidden_size"], mc["moe_intermediate_size"], mc["num_shared_experts"]
        self.gate = Gate(mc)
        self.experts = nn.ModuleList([MLP(H, MI) for _ in range(mc["num_experts"])])
        self.shared_experts = MLP(H, S * MI) if S > 0 else None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        idx, w = self.gate(x)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            out = out.index_add(0, tok, expert(x[tok]) * w[tok, slot, None])
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        self.last_counts = torch.bincount(idx.reshape(-1), minlength=len(self.experts))
        return out.view(shape)


class Layer(nn.Module):
    def __init__(self, mc, dense):
        super().__init__()
        H, eps = mc["hidden_size"], mc["rms_norm_eps"]
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = Attention(mc)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.mlp = MLP(H, mc["intermediate_size"]) if dense else MoE(mc)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, mc):
        super().__init__()
        self.embed_tokens = nn.Embedding(mc["vocab_size"], mc["hidden_size"])
        self.layers = nn.ModuleList([Layer(mc, i < mc["first_k_dense"]) for i in range(mc["num_layers"])])
        self.norm = RMSNorm(mc["hidden_size"], mc["rms_norm_eps"])


class CausalLM(nn.Module):
    def __init__(self, mc):
        super().__init__()
        self.mc = mc
        self.model = Inner(mc)
        self.lm_head = nn.Linear(mc["hidden_size"], mc["vocab_size"], bias=False)
        self._rope = {}

    def forward(self, inputs, targets):
        b, T = inputs.shape
        if T not in self._rope:
            hd = self.mc["hidden_size"] // self.mc["num_heads"]
            cos, sin = torch_moe.rope_tables(T, hd, self.mc["rope_theta"], torch.float32)
            self._rope[T] = (torch.cat([cos, cos], -1), torch.cat([sin, sin], -1),
                             torch.ones(T, T, dtype=torch.bool).triu(1))
        cos, sin, mask = self._rope[T]
        h = self.model.embed_tokens(inputs)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        logits = self.lm_head(self.model.norm(h))
        return F.cross_entropy(logits.view(b * T, -1), targets.reshape(-1), reduction="sum")

    def moe_modules(self):
        return [l.mlp for l in self.model.layers if isinstance(l.mlp, MoE)]


def build(cfg, weights=None, seed=None):
    mc = cfg["model"]
    m = CausalLM(mc)
    if weights is None:
        weights = torch_moe.init_weights(mc, cfg["train"]["seed"] if seed is None else seed)
    missing, unexpected = m.load_state_dict(weights, strict=True)
    return m


class Bench:
    def __init__(self, cfg, model, data):
        tc = cfg["train"]
        self.cfg, self.tc, self.m, self.data = cfg, tc, model, data
        self.mbs = tc["micro_batch_size"]
        self.nmb = tc["num_micro_batches"] * cfg["parallel"]["dp"]
        self.B, self.T = self.mbs * self.nmb, tc["seq_len"]
        decay = [p for p in model.parameters() if p.dim() == 2]
        other = [p for p in model.parameters() if p.dim() != 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc["weight_decay"]},
                                      {"params": other, "weight_decay": 0.0}],
                                     lr=tc["lr"], betas=(tc["beta1"], tc["beta2"]), eps=tc["eps"])

    def step(self, s):
        t = s + 1
        self.opt.zero_grad(set_to_none=True)
        denom = self.B * self.T
        total = 0.0
        counts = [0 for _ in self.m.moe_modules()]
        for mb in range(self.nmb):
            x, y = self.data.batch(s, mb * self.mbs, self.mbs, self.B, self.T)
            loss = self.m(x, y)
            (loss / denom).backward()
            total += float(loss.detach())
            counts = [c + mod.last_counts for c, mod in zip(counts, self.m.moe_modules())]
        if self.tc["grad_clip"] > 0:
            gn = float(torch.nn.utils.clip_grad_norm_(self.m.parameters(), self.tc["grad_clip"]))
        else:
            gn = float(torch.norm(torch.stack([p.grad.norm() for p in self.m.parameters() if p.grad is not None])))
        lr_t = torch_moe.lr_at(t, self.tc)
        for g in self.opt.param_groups:
            g["lr"] = lr_t
        self.opt.step()
        rate = self.cfg["model"]["bias_update_rate"]
        with torch.no_grad():
            for mod, c in zip(self.m.moe_modules(), counts):
                b = mod.gate.e_score_correction_bias
                b += rate * torch.sign(c.double().mean() - c.double()).float()
        return total / denom, gn


class RandomData:
    def __init__(self, V, n=1 << 20, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.N = n
        self.train = torch.randint(0, V, (n,), generator=g)

    sequence = torch_moe.Data.sequence
    batch = torch_moe.Data.batch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="section.key=value")
    ap.add_argument("--init", default="", help="initial weights (default: make_init's for train.seed)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = torch_moe.load_config(a.config, a.set)
    mc = cfg["model"]
    weights = torch_moe.load_safetensors(a.init) if a.init else None
    model = build(cfg, weights)
    dc = cfg["data"]
    if dc["path"] and os.path.exists(dc["path"]):
        data = torch_moe.Data(dc, mc["vocab_size"])
    else:
        data = RandomData(mc["vocab_size"])
    b = Bench(cfg, model, data)
    warm = 2
    for s in range(warm):
        b.step(s)
    t0 = time.perf_counter()
    losses = []
    for s in range(warm, warm + a.steps):
        losses.append(b.step(s)[0])
    dt = time.perf_counter() - t0
    tokens = b.B * b.T * a.steps
    active = sum(p.numel() for n, p in model.named_parameters()
                 if ".mlp.experts." not in n and n != "model.embed_tokens.weight")
    active += (mc["num_layers"] - mc["first_k_dense"]) * mc["top_k"] * 3 * mc["hidden_size"] * mc["moe_intermediate_size"]
    flops_tok = 6 * active + 12 * mc["num_layers"] * mc["hidden_size"] * b.T
    print(json.dumps({"tokens_per_s": tokens / dt, "ms_per_step": 1000 * dt / a.steps, "threads": a.threads,
                      "steps": a.steps, "tokens_per_step": b.B * b.T, "torch": torch.__version__,
                      "model_flops_per_token": flops_tok, "gflops": flops_tok * tokens / dt / 1e9,
                      "last_loss": losses[-1] if losses else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
