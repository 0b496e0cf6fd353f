#!/usr/bin/env python3
"""Compares two per-step metrics files (JSON lines) step by step.

  python3 tests/reference/compare_losses.py REF.jsonl EPX.jsonl [--rtol 1e-4] [--steps N]

For every step present in both files (matched by "step"; the first N with --steps):
  - while expert_counts agree exactly: |loss_a - loss_b| <= rtol * |loss_a|
    and |grad_norm_a - grad_norm_b| <= gtol (1e-3) * |grad_norm_a|;
  - from the first step whose expert_counts differ (a routing near-tie flip
    under f32 reordering) it says "routing differs from step K" and checks only
    that the losses stay within --flip-rtol (1e-3) relative; grad_norm is
    then shown but not checked.
Prints a table and a last line "compare: OK ..." or "compare: FAILED ...";
exit code 0 / 1 (2 for unreadable input).  Needs only the standard library.
"""
import argparse
import json
import sys


def read(path):
    recs = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"compare: {path}:{n}: not JSON ({e})")
            if "step" in r and "loss" in r:
                recs[int(r["step"])] = r
    return recs


def rel(a, b):
    d = abs(a - b)
    s = abs(a)
    return d / s if s > 0 else d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--rtol", type=float, default=1e-4, help="loss, while the routing agrees")
    ap.add_argument("--gtol", type=float, default=1e-3, help="grad_norm, while the routing agrees")
    ap.add_argument("--flip-rtol", type=float, default=1e-3, help="loss, after the routing differs")
    ap.add_argument("--steps", type=int, default=0, help="compare only the first N steps")
    a = ap.parse_args(argv)
    try:
        A, B = read(a.ref), read(a.other)
    except OSError as e:
        print(f"compare: FAILED: {e}")
        return 2
    steps = sorted(set(A) & set(B))
    if a.steps:
        steps = [s for s in steps if s <= a.steps]
        missing = [s for s in range(1, a.steps + 1) if s not in A or s not in B]
    else:
        missing = sorted(set(A) ^ set(B))
    if not steps:
        print(f"compare: FAILED: no common steps in {a.ref} and {a.other}")
        return 1
    flip = None
    fails = []
    worst_loss = worst_gn = worst_flip = 0.0
    print(f"{'step':>5} {'loss ref':>14} {'loss other':>14} {'rel':>9} {'gnorm ref':>11} {'gnorm other':>11} {'rel':>9}  routing")
    for s in steps:
        ra, rb = A[s], B[s]
        la, lb = float(ra["loss"]), float(rb["loss"])
        ga, gb = ra.get("grad_norm"), rb.get("grad_norm")
        ca, cb = ra.get("expert_counts"), rb.get("expert_counts")
        same = ca == cb
        if flip is None and not same:
            flip = s
            print(f"routing differs from step {s}: counts {ca} vs {cb}")
        rl = rel(la, lb)
        rg = rel(float(ga), float(gb)) if ga is not None and gb is not None else None
        bad = []
        if la != la or lb != lb:
            bad.append("loss NaN")
        if flip is None:
            worst_loss = max(worst_loss, rl)
            if rl > a.rtol:
                bad.append(f"loss rel {rl:.2e} > {a.rtol:g}")
            if rg is not None:
                worst_gn = max(worst_gn, rg)
                if rg > a.gtol:
                    bad.append(f"grad_norm rel {rg:.2e} > {a.gtol:g}")
            tag = "same"
        else:
            worst_flip = max(worst_flip, rl)
            if rl > a.flip_rtol:
                bad.append(f"loss rel {rl:.2e} > {a.flip_rtol:g} (after the routing flip)")
            tag = "same" if same else "DIFFERS"
        if bad:
            fails.append((s, bad))
        gtxt = f"{float(ga):11.6f} {float(gb):11.6f} {rg:9.2e}" if rg is not None else f"{'-':>11} {'-':>11} {'-':>9}"
        print(f"{s:5d} {la:14.8f} {lb:14.8f} {rl:9.2e} {gtxt}  {tag}{'  <-- ' + '; '.join(bad) if bad else ''}")
    if missing:
        fails.append((None, [f"steps missing from one file: {missing[:10]}{' ...' if len(missing) > 10 else ''}"]))
    summary = (f"{len(steps)} steps, max loss rel {worst_loss:.2e} (rtol {a.rtol:g}), "
               f"max grad_norm rel {worst_gn:.2e} (gtol {a.gtol:g}), "
               + (f"routing differs from step {flip}, max loss rel after it {worst_flip:.2e} (tol {a.flip_rtol:g})"
                  if flip is not None else "routing identical at every step"))
    if fails:
        for s, bad in fails:
            print(f"  step {s}: {'; '.join(bad)}" if s is not None else f"  {'; '.join(bad)}")
        print(f"compare: FAILED at {len(fails)} step(s): {summary}")
        return 1
    print(f"compare: OK {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
