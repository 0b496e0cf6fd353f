#!/usr/bin/env python3
"""Compares two epx-train metrics.jsonl files step by step under the grid
contract of docs/train.md: while the per-layer expert counts agree (the same
routing decisions), losses agree within --rtol (default 1e-5, relative);
after the first step whose counts differ (a near-tie flip under f32
reordering), within --flip-rtol (default 1e-3). --exact asks for identical
losses (resume). Prints one line per step and a closing 'compare: OK' or
'compare: FAILED' line; exits 0 or 1."""
import argparse
import json
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows[r["step"]] = r
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ref")
    p.add_argument("got")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--flip-rtol", type=float, default=1e-3)
    p.add_argument("--exact", action="store_true")
    p.add_argument("--steps", default="", help="first:last (default: the steps both files have)")
    a = p.parse_args()
    ref, got = load(a.ref), load(a.got)
    steps = sorted(set(ref) & set(got))
    if a.steps:
        lo, hi = (int(x) for x in a.steps.split(":"))
        steps = [s for s in steps if lo <= s <= hi]
        missing = [s for s in range(lo, hi + 1) if s not in steps]
        if missing:
            print(f"compare: FAILED: steps {missing} missing in one of the files")
            return 1
    if not steps:
        print("compare: FAILED: no common steps")
        return 1
    flipped_at = None
    worst = 0.0
    bad = []
    for s in steps:
        lr, lg = ref[s]["loss"], got[s]["loss"]
        rel = abs(lr - lg) / max(abs(lr), 1e-30)
        same_routing = ref[s].get("expert_counts") == got[s].get("expert_counts")
        if not same_routing and flipped_at is None:
            flipped_at = s
        if a.exact:
            ok = lr == lg and same_routing
            rule = "identical"
        elif flipped_at is None:
            ok, rule = rel <= a.rtol, f"<= {a.rtol:g}"
        else:
            ok, rule = rel <= a.flip_rtol, f"<= {a.flip_rtol:g} (after the flip)"
        worst = max(worst, rel)
        print(f"step {s:4d}  ref {lr:.9f}  got {lg:.9f}  rel {rel:.2e}  {rule}"
              f"{'' if same_routing else '  routing differs'}{'' if ok else '  <-- FAIL'}")
        if not ok:
            bad.append(s)
    if flipped_at is not None:
        print(f"compare: note: the routing differs from step {flipped_at} on (a near-tie flip)")
    if bad:
        print(f"compare: FAILED: steps {bad} outside the rule (worst relative difference {worst:.2e})")
        return 1
    print(f"compare: OK, {len(steps)} steps, worst relative difference {worst:.2e}"
          f"{'' if flipped_at is None else f', routing flip at step {flipped_at}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
