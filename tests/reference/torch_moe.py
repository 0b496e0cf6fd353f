#!/usr/bin/python3
"""Independent PyTorch reference of epx-train's model and training step.

Written from the spec (issue 11, "The model", and epx's binding clarifications),
not from the C++ code.  Everything is float32 on the CPU in one process; the
global batch of B = micro_batch_size * num_micro_batches * dp sequences is run
micro-batch by micro-batch, in sequence order, accumulating gradients.

Library: load_config(), init_weights(), load/save_safetensors(), Model,
route(), adamw_step(), lr_at(), Data, Trainer.
CLI:
  python3 tests/reference/torch_moe.py --config CFG.yaml --init INIT.safetensors \
      --steps N [--set section.key=value ...] --out losses.jsonl
"""
import os
import sys


def _ensure_torch():
    # The PATH's python3 may be a pyenv one without Debian's python3-torch:
    # re-run under the system interpreter that has it.
    try:
        import torch  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        sysp = "/usr/bin/python3"
        if os.path.realpath(sys.executable) != os.path.realpath(sysp) and os.path.exists(sysp) \
                and not os.environ.get("EPX_TORCHREF_REEXEC"):
            os.environ["EPX_TORCHREF_REEXEC"] = "1"
            os.execv(sysp, [sysp] + sys.argv)
        raise


_ensure_torch()

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import struct  # noqa: E402
import zlib  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

# ----------------------------------------------------------------------------
# Config: the same sections, keys and defaults as train/config.hpp.

DEFAULTS = {
    "model": {
        "vocab_size": 256, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 128, "first_k_dense": 1, "num_experts": 8,
        "num_shared_experts": 1, "moe_intermediate_size": 32, "top_k": 2,
        "n_group": 1, "topk_group": 1, "score_function": "sigmoid",
        "routed_scaling_factor": 1.0, "bias_update_rate": 0.001,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "init_std": 0.02,
        "init_from": "",
    },
    "train": {
        "seq_len": 64, "micro_batch_size": 4, "num_micro_batches": 1,
        "max_steps": 100, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 10,
        "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
        "grad_clip": 1.0, "seed": 1234, "eval_every": 0, "eval_batches": 4,
        "checkpoint_every": 0, "checkpoint_dir": "checkpoints", "threads": 1,
    },
    "data": {"path": "", "format": "bytes", "val_fraction": 0.1},
    "parallel": {"dp": 1, "ep": 1, "fp8_dispatch": False},
    "log": {"metrics": "", "every": 1, "report": ""},
}


class ConfigError(ValueError):
    pass


def _coerce(section, key, value):
    default = DEFAULTS[section][key]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config: {section}.{key} = {value!r}, expected a bool")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {section}.{key} = {value!r}, expected an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {section}.{key} = {value!r}, expected a number")
        return float(value)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"config: {section}.{key} = {value!r}, expected a string")
    return value


def parse_config(text, overrides=()):
    """YAML text + "section.key=value" overrides -> dict of sections (defaults filled)."""
    cfg = copy.deepcopy(DEFAULTS)
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    items = []
    for section, body in doc.items():
        if section not in DEFAULTS:
            raise ConfigError(f"config: unknown section {section!r}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config: section {section!r} must be a mapping")
        for key, value in body.items():
            items.append((section, key, value))
    for ov in overrides:
        if "=" not in ov or "." not in ov.split("=", 1)[0]:
            raise ConfigError(f"config: --set {ov!r}, expected section.key=value")
        lhs, rhs = ov.split("=", 1)
        section, key = lhs.split(".", 1)
        items.append((section, key, yaml.safe_load(rhs) if rhs != "" else ""))
    for section, key, value in items:
        if section not in DEFAULTS:
            raise ConfigError(f"config: unknown section {section!r}")
        if key not in DEFAULTS[section]:
            raise ConfigError(f"config: unknown key {section}.{key}")
        cfg[section][key] = _coerce(section, key, value)
    validate(cfg)
    return cfg


def load_config(path, overrides=()):
    with open(path) as f:
        return parse_config(f.read(), overrides)


def validate(cfg):
    m, t, d, p = cfg["model"], cfg["train"], cfg["data"], cfg["parallel"]

    def need(cond, msg):
        if not cond:
            raise ConfigError("config: " + msg)

    need(m["hidden_size"] % m["num_heads"] == 0, "model.hidden_size % model.num_heads != 0")
    need((m["hidden_size"] // m["num_heads"]) % 2 == 0, "head_dim must be even")
    need(0 <= m["first_k_dense"] <= m["num_layers"], "model.first_k_dense out of range")
    need(m["score_function"] in ("sigmoid", "softmax"), "model.score_function must be sigmoid|softmax")
    if m["first_k_dense"] < m["num_layers"]:
        E, G = m["num_experts"], m["n_group"]
        need(G >= 1 and E % G == 0, "model.num_experts % model.n_group != 0")
        if G > 1:
            need(E // G >= 2, "fewer than 2 experts per group")
            need(1 <= m["topk_group"] <= G, "model.topk_group out of range")
            kept = (E // G) * m["topk_group"]
        else:
            kept = E
        need(1 <= m["top_k"] <= kept, f"model.top_k = {m['top_k']}, expected <= {kept} (experts in the kept groups)")
    need(d["format"] in ("bytes", "u16", "u32"), "data.format must be bytes|u16|u32")
    need(d["format"] != "bytes" or m["vocab_size"] == 256, "data.format bytes needs model.vocab_size 256")
    need(p["dp"] >= 1 and p["ep"] >= 1 and p["dp"] % p["ep"] == 0, "parallel.dp % parallel.ep != 0")
    need(t["seq_len"] >= 1 and t["micro_batch_size"] >= 1 and t["num_micro_batches"] >= 1, "train batch sizes must be >= 1")


# ----------------------------------------------------------------------------
# safetensors, written by hand (8-byte LE header length, JSON header, data).

_DT = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "BF16": (torch.bfloat16, 2),
       "F16": (torch.float16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4)}


def load_safetensors(path, dtype=torch.float32):
    """name -> tensor (converted to `dtype`); reads F32, BF16 (and F16/F64)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code = info["dtype"]
        shape = info["shape"]
        b0, b1 = info["data_offsets"]
        raw = bytearray(blob[base + b0: base + b1])
        count = 1
        for s in shape:
            count *= s
        if code == "BF16":
            # bf16 -> f32 exactly: the 16 bits are the high half of an f32.
            u16 = torch.frombuffer(raw, dtype=torch.int16, count=count).to(torch.int32) & 0xFFFF
            t = (u16 << 16).view(torch.float32)
        elif code in _DT:
            tdt, size = _DT[code]
            if b1 - b0 != count * size:
                raise ValueError(f"{path}: {name}: {b1 - b0} bytes for {shape} {code}")
            t = torch.frombuffer(raw, dtype=tdt, count=count) if count else torch.empty(0, dtype=tdt)
        else:
            raise ValueError(f"{path}: {name}: unsupported dtype {code}")
        out[name] = t.reshape(shape).to(dtype).clone()
    return out


def save_safetensors(path, tensors, metadata=None):
    """Writes name -> tensor as F32 (F64 tensors stay F64), names sorted."""
    header = {}
    chunks = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype != torch.float64:
            t = t.to(torch.float32)
        code = "F64" if t.dtype == torch.float64 else "F32"
        data = t.numpy().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Weights: names, shapes, init.

def weight_shapes(mc):
    """Ordered dict name -> (shape, kind); kind in matrix|matrix_out|norm|bias."""
    V, H, L = mc["vocab_size"], mc["hidden_size"], mc["num_layers"]
    E, I, MI, S = mc["num_experts"], mc["intermediate_size"], mc["moe_intermediate_size"], mc["num_shared_experts"]
    shapes = {"model.embed_tokens.weight": ([V, H], "matrix")}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = ([H], "norm")
        for n in "qkv":
            shapes[p + f"self_attn.{n}_proj.weight"] = ([H, H], "matrix")
        shapes[p + "self_attn.o_proj.weight"] = ([H, H], "matrix_out")
        shapes[p + "post_attention_layernorm.weight"] = ([H], "norm")
        if i < mc["first_k_dense"]:
            shapes[p + "mlp.gate_proj.weight"] = ([I, H], "matrix")
            shapes[p + "mlp.up_proj.weight"] = ([I, H], "matrix")
            shapes[p + "mlp.down_proj.weight"] = ([H, I], "matrix_out")
        else:
            shapes[p + "mlp.gate.weight"] = ([E, H], "matrix")
            shapes[p + "mlp.gate.e_score_correction_bias"] = ([E], "bias")
            for e in range(E):
                q = p + f"mlp.experts.{e}."
                shapes[q + "gate_proj.weight"] = ([MI, H], "matrix")
                shapes[q + "up_proj.weight"] = ([MI, H], "matrix")
                shapes[q + "down_proj.weight"] = ([H, MI], "matrix_out")
            if S > 0:
                q = p + "mlp.shared_experts."
                shapes[q + "gate_proj.weight"] = ([S * MI, H], "matrix")
                shapes[q + "up_proj.weight"] = ([S * MI, H], "matrix")
                shapes[q + "down_proj.weight"] = ([H, S * MI], "matrix_out")
    shapes["model.norm.weight"] = ([H], "norm")
    shapes["lm_head.weight"] = ([V, H], "matrix")
    return shapes


def init_weights(mc, seed, bias_range=0.01, dtype=torch.float32):
    """Deterministic random weights, one torch.Generator per tensor keyed by
    (seed, crc32(name)).  This is the reference's own init (make_init.py), not
    epx-train's: compare runs through a shared --init file."""
    std = mc["init_std"]
    std_out = std / math.sqrt(2 * mc["num_layers"])
    out = {}
    for name, (shape, kind) in weight_shapes(mc).items():
        g = torch.Generator().manual_seed((int(seed) * 1000003 + zlib.crc32(name.encode())) % (2 ** 63))
        if kind == "norm":
            t = torch.ones(shape, dtype=torch.float64)
        elif kind == "bias":
            t = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bias_range
        else:
            s = std if kind == "matrix" else std_out
            t = torch.randn(shape, generator=g, dtype=torch.float64) * s
        out[name] = t.to(dtype)
    return out


# ----------------------------------------------------------------------------
# The model, functional over a dict of tensors (dtype-generic).

def rms_norm(x, w, eps):
    # x * rsqrt(mean(x^2) + eps) * w
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope_tables(seq_len, head_dim, theta, dtype):
    """cos, sin [T, head_dim/2]: angle = pos * theta^(-2j/head_dim), computed in
    double and rounded once to `dtype`."""
    half = head_dim // 2
    j = torch.arange(half, dtype=torch.float64)
    inv = torch.pow(torch.tensor(float(theta), dtype=torch.float64), -2.0 * j / head_dim)
    pos = torch.arange(seq_len, dtype=torch.float64)
    ang = pos[:, None] * inv[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):
    """x [..., T, hd] rotate-half: out = [x1 cos - x2 sin, x2 cos + x1 sin]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(x, P, p, mc, cos, sin):
    b, T, H = x.shape
    nh = mc["num_heads"]
    hd = H // nh
    q = (x @ P[p + "self_attn.q_proj.weight"].t()).view(b, T, nh, hd).transpose(1, 2)
    k = (x @ P[p + "self_attn.k_proj.weight"].t()).view(b, T, nh, hd).transpose(1, 2)
    v = (x @ P[p + "self_attn.v_proj.weight"].t()).view(b, T, nh, hd).transpose(1, 2)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    scale = 1.0 / math.sqrt(hd)
    sc = (q @ k.transpose(-1, -2)) * scale
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    sc = sc.masked_fill(mask, float("-inf"))
    a = torch.softmax(sc, dim=-1) @ v
    a = a.transpose(1, 2).reshape(b, T, H)
    return a @ P[p + "self_attn.o_proj.weight"].t()


def swiglu(x, wg, wu, wd):
    return (F.silu(x @ wg.t()) * (x @ wu.t())) @ wd.t()


def _desc_order(v):
    """Indices sorting v's last dim by descending value, ties to the lower index."""
    return torch.sort(-v, dim=-1, stable=True).indices


def route(logits, bias, mc):
    """DeepSeek-V3 routing.  logits [N,E] = x W_r^T.
    Returns idx [N,k] (descending s+b, ties to lower index), w [N,k] (grad
    flows to logits through s), s [N,E]."""
    E, K = mc["num_experts"], mc["top_k"]
    G, TG = mc["n_group"], mc["topk_group"]
    if mc["score_function"] == "sigmoid":
        s = torch.sigmoid(logits)
    else:
        s = torch.softmax(logits, dim=-1)
    sel = s.detach() + bias.detach()
    if G > 1:
        N = sel.shape[0]
        gs = sel.view(N, G, E // G)
        top2 = torch.gather(gs, -1, _desc_order(gs)[..., :2])
        gscore = top2[..., 0] + top2[..., 1]          # highest + second highest
        keep = _desc_order(gscore)[:, :TG]            # [N, TG]
        gmask = torch.zeros(N, G, dtype=torch.bool)
        gmask.scatter_(1, keep, True)
        emask = gmask[:, :, None].expand(N, G, E // G).reshape(N, E)
        sel = sel.masked_fill(~emask, float("-inf"))
    idx = _desc_order(sel)[:, :K]
    sk = torch.gather(s, 1, idx)                       # [N, K]
    S = sk[:, 0]
    for k in range(1, K):                              # sum in k order
        S = S + sk[:, k]
    rsf = torch.tensor(mc["routed_scaling_factor"], dtype=s.dtype)
    w = (sk / S[:, None]) * rsf                         # divide first, then multiply
    return idx, w, s


def moe(x, P, B_, p, mc):
    """x [N,H] -> (out [N,H], counts [E] long)."""
    N, H = x.shape
    E, K = mc["num_experts"], mc["top_k"]
    logits = x @ P[p + "mlp.gate.weight"].t()
    idx, w, _ = route(logits, B_[p + "mlp.gate.e_score_correction_bias"], mc)
    flat = idx.reshape(-1)                             # row r = token*K + k
    rows, outs = [], []
    for e in range(E):
        r = torch.nonzero(flat == e, as_tuple=False).view(-1)
        if r.numel() == 0:
            continue
        q = p + f"mlp.experts.{e}."
        xe = x.index_select(0, torch.div(r, K, rounding_mode="floor"))
        outs.append(swiglu(xe, P[q + "gate_proj.weight"], P[q + "up_proj.weight"], P[q + "down_proj.weight"]))
        rows.append(r)
    perm = torch.cat(rows)
    Y = torch.cat(outs).index_select(0, torch.argsort(perm)).view(N, K, H)
    out = w[:, 0:1] * Y[:, 0]
    for k in range(1, K):                              # sum in k order
        out = out + w[:, k:k + 1] * Y[:, k]
    if mc["num_shared_experts"] > 0:
        q = p + "mlp.shared_experts."
        out = out + swiglu(x, P[q + "gate_proj.weight"], P[q + "up_proj.weight"], P[q + "down_proj.weight"])
    counts = torch.bincount(flat, minlength=E)
    return out, counts


class Model:
    """Parameters (dict name -> leaf tensor with requires_grad) and bias
    buffers (dict name -> tensor, no grad)."""

    def __init__(self, mc, weights, dtype=torch.float32):
        self.mc = mc
        self.dtype = dtype
        self.params = {}
        self.buffers = {}
        shapes = weight_shapes(mc)
        for name, (shape, kind) in shapes.items():
            if name not in weights:
                raise KeyError(f"init file lacks {name}")
            t = weights[name].to(dtype).clone()
            if list(t.shape) != shape:
                raise ValueError(f"{name}: shape {list(t.shape)}, expected {shape}")
            if kind == "bias":
                self.buffers[name] = t
            else:
                self.params[name] = t.requires_grad_(True)
        self.moe_layers = [i for i in range(mc["num_layers"]) if i >= mc["first_k_dense"]]
        self._rope = {}

    def state(self):
        d = {k: v.detach() for k, v in self.params.items()}
        d.update(self.buffers)
        return d

    def forward_loss_sum(self, inputs, targets, params=None):
        """inputs, targets [b,T] long -> (sum of per-position CE, [counts per MoE layer])."""
        mc = self.mc
        P = self.params if params is None else params
        b, T = inputs.shape
        hd = mc["hidden_size"] // mc["num_heads"]
        if T not in self._rope:
            self._rope[T] = rope_tables(T, hd, mc["rope_theta"], self.dtype)
        cos, sin = self._rope[T]
        eps = mc["rms_norm_eps"]
        h = F.embedding(inputs, P["model.embed_tokens.weight"])
        counts = []
        for i in range(mc["num_layers"]):
            p = f"model.layers.{i}."
            h = h + attention(rms_norm(h, P[p + "input_layernorm.weight"], eps), P, p, mc, cos, sin)
            x = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
            if i < mc["first_k_dense"]:
                f = swiglu(x, P[p + "mlp.gate_proj.weight"], P[p + "mlp.up_proj.weight"], P[p + "mlp.down_proj.weight"])
            else:
                f, c = moe(x.reshape(b * T, -1), P, self.buffers, p, mc)
                f = f.view(b, T, -1)
                counts.append(c)
            h = h + f
        h = rms_norm(h, P["model.norm.weight"], eps)
        logits = h @ P["lm_head.weight"].t()
        loss = F.cross_entropy(logits.view(b * T, -1), targets.reshape(-1), reduction="sum")
        return loss, counts


# ----------------------------------------------------------------------------
# Optimizer, schedule, bias update.

def f32(x):
    """Round a Python float (double) once to float32, back as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def lr_at(t, tc):
    lr, min_lr, W, M = tc["lr"], tc["min_lr"], tc["warmup_steps"], tc["max_steps"]
    if W > 0 and t <= W:
        return lr * t / W
    if M <= W:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (t - W) / (M - W)))


class AdamW:
    """By hand, in torch.optim.AdamW's order with the clarified scalar rounding:
    scalars in double rounded once to the parameter dtype, elementwise math in
    that dtype."""

    def __init__(self, params, beta1, beta2, eps, weight_decay):
        self.params = params  # dict name -> tensor
        self.b1, self.b2, self.eps, self.wd = beta1, beta2, eps, weight_decay
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def step(self, t, lr_t, grads):
        dt = next(iter(self.params.values())).dtype
        rnd = f32 if dt == torch.float32 else (lambda z: z)

        def sc(z):
            return torch.tensor(rnd(z), dtype=dt)

        decay = sc(1.0 - lr_t * self.wd)
        step_size = sc(lr_t / (1.0 - self.b1 ** t))
        bc2 = sc(math.sqrt(1.0 - self.b2 ** t))
        b1, omb1 = sc(self.b1), sc(1.0 - self.b1)
        b2, omb2 = sc(self.b2), sc(1.0 - self.b2)
        eps = sc(self.eps)
        for n, p in self.params.items():
            g = grads[n]
            m, v = self.m[n], self.v[n]
            if p.dim() == 2:
                p.copy_(p * decay)
            m.copy_(b1 * m + omb1 * g)
            v.copy_(b2 * v + omb2 * g * g)
            p.copy_(p - step_size * (m / (torch.sqrt(v) / bc2 + eps)))


def grad_norm_and_clip(grads, grad_clip):
    """norm = sqrt(sum g^2) accumulated in double over every element; when
    grad_clip > 0, g *= (float)min(1, grad_clip/(norm+1e-6))."""
    tot = 0.0
    for g in grads.values():
        tot += float((g.double() * g.double()).sum())
    norm = math.sqrt(tot)
    if grad_clip > 0:
        coef = min(1.0, grad_clip / (norm + 1e-6))
        for n in grads:
            dt = grads[n].dtype
            c = torch.tensor(f32(coef) if dt == torch.float32 else coef, dtype=dt)
            grads[n] = grads[n] * c
    return norm


def bias_update(buffers, counts_per_layer, moe_layers, rate):
    """b_e += (float)rate * sign(mean - c_e), mean = sum(c)/E in double."""
    for li, c in zip(moe_layers, counts_per_layer):
        name = f"model.layers.{li}.mlp.gate.e_score_correction_bias"
        b = buffers[name]
        E = c.numel()
        mean = float(c.sum().item()) / E
        sgn = torch.tensor([(1.0 if mean > ce else (-1.0 if mean < ce else 0.0)) for ce in c.tolist()], dtype=b.dtype)
        r = torch.tensor(f32(rate) if b.dtype == torch.float32 else rate, dtype=b.dtype)
        buffers[name] = b + r * sgn


# ----------------------------------------------------------------------------
# Data.

class Data:
    def __init__(self, dc, vocab_size):
        import numpy as np
        fmt = dc["format"]
        dt = {"bytes": np.uint8, "u16": np.dtype("<u2"), "u32": np.dtype("<u4")}[fmt]
        arr = np.fromfile(dc["path"], dtype=dt)
        total = int(arr.shape[0])
        n_val = int(math.floor(total * dc["val_fraction"]))
        self.N = total - n_val
        toks = torch.from_numpy(arr.astype(np.int64))
        if int(toks.max()) >= vocab_size:
            raise ValueError(f"data: token {int(toks.max())} >= vocab_size {vocab_size}")
        self.train = toks[: self.N]
        self.val = toks[self.N:]

    def sequence(self, step, j, B, T):
        """Sequence j of step `step` (both from 0): (inputs [T], targets [T])."""
        if self.N - T <= 0:
            raise ValueError(f"data: training split has {self.N} tokens, needs more than seq_len {T}")
        start = ((step * B + j) * T) % (self.N - T)
        x = self.train[start: start + T]
        y = self.train[start + 1: start + T + 1]
        return x, y

    def batch(self, step, j0, n, B, T):
        xs, ys = zip(*[self.sequence(step, j0 + i, B, T) for i in range(n)])
        return torch.stack(xs), torch.stack(ys)


# ----------------------------------------------------------------------------
# Trainer.

class Trainer:
    def __init__(self, cfg, weights, dtype=torch.float32, data=None):
        self.cfg = cfg
        self.mc, self.tc = cfg["model"], cfg["train"]
        self.model = Model(self.mc, weights, dtype)
        self.opt = AdamW(self.model.params, self.tc["beta1"], self.tc["beta2"], self.tc["eps"], self.tc["weight_decay"])
        self.data = data if data is not None else Data(cfg["data"], self.mc["vocab_size"])
        tc, pc = self.tc, cfg["parallel"]
        self.mbs = tc["micro_batch_size"]
        self.nmb = tc["num_micro_batches"] * pc["dp"]     # rank-major, then micro-batch
        self.B = self.mbs * self.nmb
        self.T = tc["seq_len"]

    def compute_grads(self, s):
        """Step s (from 0): accumulates grads over the micro-batches in order.
        Returns (loss, grads dict, counts per MoE layer [E] long)."""
        P = self.model.params
        for p in P.values():
            p.grad = None
        denom = self.B * self.T
        total = 0.0
        counts = None
        for mb in range(self.nmb):
            x, y = self.data.batch(s, mb * self.mbs, self.mbs, self.B, self.T)
            lsum, c = self.model.forward_loss_sum(x, y)
            (lsum / denom).backward()
            total += float(lsum.detach())
            counts = c if counts is None else [a + b for a, b in zip(counts, c)]
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in P.items()}
        return total / denom, grads, counts

    def step(self, s):
        t = s + 1
        loss, grads, counts = self.compute_grads(s)
        gnorm = grad_norm_and_clip(grads, self.tc["grad_clip"])
        lr_t = lr_at(t, self.tc)
        self.opt.step(t, lr_t, grads)
        if self.model.moe_layers and self.mc["bias_update_rate"] != 0:
            bias_update(self.model.buffers, counts, self.model.moe_layers, self.mc["bias_update_rate"])
        return {"step": t, "loss": loss, "lr": lr_t, "grad_norm": gnorm,
                "expert_counts": [c.tolist() for c in counts]}

    @torch.no_grad()
    def eval_loss(self, batches):
        """Mean CE over `batches` val batches of B sequences at offsets like the
        training formula but on the validation split (reference convenience; not
        in the spec)."""
        val = self.data.val
        n = val.numel()
        tot, cnt = 0.0, 0
        for s in range(batches):
            for j in range(self.B):
                st = ((s * self.B + j) * self.T) % max(1, n - self.T)
                x = val[st: st + self.T][None]
                y = val[st + 1: st + self.T + 1][None]
                l, _ = self.model.forward_loss_sum(x, y)
                tot += float(l)
                cnt += self.T
        return tot / max(cnt, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--init", default="", help="initial weights (safetensors); default model.init_from")
    ap.add_argument("--steps", type=int, default=0, help="steps to train (default train.max_steps)")
    ap.add_argument("--set", action="append", default=[], metavar="section.key=value")
    ap.add_argument("--out", default="", help="JSON lines, one per step (default: stdout)")
    ap.add_argument("--save", default="", help="write the final weights (bias buffers included) here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default train.threads)")
    ap.add_argument("--float64", action="store_true", help="run the whole thing in float64")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.config, a.set)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads or cfg["train"]["threads"])
    dtype = torch.float64 if a.float64 else torch.float32
    init = a.init or cfg["model"]["init_from"]
    if init:
        weights = load_safetensors(init, dtype)
    else:
        print("torch_moe: no --init and no model.init_from: using make_init's weights for train.seed "
              "(not epx-train's own init)", file=sys.stderr)
        weights = init_weights(cfg["model"], cfg["train"]["seed"], dtype=dtype)
    tr = Trainer(cfg, weights, dtype)
    steps = a.steps or cfg["train"]["max_steps"]
    out = open(a.out, "w") if a.out else sys.stdout
    try:
        for s in range(steps):
            rec = tr.step(s)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            if a.out:
                print(f"step {rec['step']}/{steps} loss {rec['loss']:.6f} lr {rec['lr']:.3e} "
                      f"grad_norm {rec['grad_norm']:.4f}", file=sys.stderr)
    finally:
        if a.out:
            out.close()
    if a.save:
        save_safetensors(a.save, tr.model.state(), {"format": "pt"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
