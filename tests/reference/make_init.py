#!/usr/bin/python3
"""Random initial weights for the reference / epx-train comparison.

  python3 tests/reference/make_init.py --config CFG.yaml --seed S --out INIT.safetensors [--set ...]

Every HF name of the model (torch_moe.weight_shapes), F32:
matrices normal(0, init_std); o_proj and every down_proj (dense, expert,
shared) normal(0, init_std/sqrt(2L)); norm weights 1; the router bias buffer
mlp.gate.e_score_correction_bias uniform(-bias_range, bias_range) (default
0.01, so the bias path of the routing is exercised).  One torch.Generator per
tensor, seeded from (seed, crc32(name)).  Header __metadata__ {"format": "pt"}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe  # noqa: E402  (re-executes under /usr/bin/python3 if torch is missing)
import argparse  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="section.key=value")
    ap.add_argument("--bias-range", type=float, default=0.01)
    a = ap.parse_args(argv)
    try:
        cfg = torch_moe.load_config(a.config, a.set)
    except torch_moe.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    w = torch_moe.init_weights(cfg["model"], a.seed, bias_range=a.bias_range)
    torch_moe.save_safetensors(a.out, w, {"format": "pt"})
    n = sum(t.numel() for t in w.values())
    print(f"make_init: {len(w)} tensors, {n} values -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
