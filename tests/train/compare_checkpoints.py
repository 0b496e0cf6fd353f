#!/usr/bin/env python3
"""Compares two epx-train checkpoints tensor by tensor (model.safetensors and
optimizer.safetensors, F32): the same names, and every tensor within a
relative tolerance of the other (max |a - b| / max |a|). Exit status 0 when
they agree.

  compare_checkpoints.py DIR_A DIR_B [--rtol 1e-5] [--only SUBSTRING]
"""
import argparse
import array
import json
import math
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] != "F32":
            sys.exit(f"compare: {path}: {name} is {v['dtype']}, expected F32")
        b, e = v["data_offsets"]
        t = array.array("f")
        t.frombytes(body[b:e])
        if sys.byteorder == "big":
            t.byteswap()
        out[name] = t
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--only", default="", help="compare only tensors whose name contains this")
    args = ap.parse_args()
    worst, worst_name, count = 0.0, "", 0
    for file in ("model.safetensors", "optimizer.safetensors"):
        a, b = load(f"{args.a}/{file}"), load(f"{args.b}/{file}")
        if sorted(a) != sorted(b):
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            sys.exit(f"compare: {file}: names differ: only in A {only_a[:3]}, only in B {only_b[:3]}")
        for name in sorted(a):
            if args.only not in name:
                continue
            x, y = a[name], b[name]
            if len(x) != len(y):
                sys.exit(f"compare: {file}: {name} has {len(x)} and {len(y)} values")
            scale = max(max((abs(v) for v in x), default=0.0), 1e-30)
            if any(math.isnan(u) or math.isnan(v) for u, v in zip(x, y)):
                sys.exit(f"compare: FAILED, {name} holds NaN")
            rel = max((abs(u - v) for u, v in zip(x, y)), default=0.0) / scale
            count += 1
            if rel > worst:
                worst, worst_name = rel, name
    verdict = "OK" if worst <= args.rtol else "FAILED"
    print(f"compare: {verdict}, {count} tensors, worst relative difference {worst:.2e} "
          f"({worst_name or '-'}), tolerance {args.rtol:g}")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
