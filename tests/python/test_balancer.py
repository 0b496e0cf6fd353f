"""epx.balancer.rebalance_experts against the C++ tool epx-eplb's JSON output
(same placement, both policies, integer and float loads), and its errors.
Usage: test_balancer.py path/to/epx-eplb"""

import json
import subprocess
import sys
import tempfile

import harness
import torch

import epx
import epx.balancer

EPLB_TOOL = sys.argv[1] if len(sys.argv) > 1 else "build/bin/epx-eplb"

# DeepSeek EPLB's published example.
EXAMPLE = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
           [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]


def tool(weight, replicas, groups, nodes, gpus, policy):
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"weight": weight}, f)
        f.flush()
        out = subprocess.run([EPLB_TOOL, "--input", f.name, "--replicas", str(replicas), "--groups",
                              str(groups), "--nodes", str(nodes), "--gpus", str(gpus), "--policy", policy],
                             check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def compare(weight, tensor, shape, policy):
    want = tool(weight, *shape, policy)
    phy2log, log2phy, logcnt = epx.balancer.rebalance_experts(tensor, *shape, policy=policy)
    assert phy2log.dtype == torch.int64 and log2phy.dtype == torch.int64 and logcnt.dtype == torch.int64
    assert phy2log.tolist() == want["phy2log"], (phy2log.tolist(), want["phy2log"])
    assert log2phy.tolist() == want["log2phy"]
    assert logcnt.tolist() == want["logcnt"]
    quality, dups = epx.balancer.evaluate_placement(tensor, phy2log, log2phy, logcnt, shape[3])
    assert all(abs(a - b) < 1e-12 for a, b in zip(quality, want["gpu_max_over_mean"]))
    assert list(dups) == want["same_gpu_duplicates"]


def test_example_both_policies(group):
    for policy in ("eplb", "balanced"):
        compare(EXAMPLE, torch.tensor(EXAMPLE), (16, 4, 2, 8), policy)
        compare(EXAMPLE, torch.tensor(EXAMPLE), (16, 4, 1, 4), policy)  # global (one node)


def test_published_phy2log(group):
    phy2log, _, logcnt = epx.balancer.rebalance_experts(torch.tensor(EXAMPLE), 16, 4, 2, 8, policy="eplb")
    assert phy2log.tolist() == [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                                [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]
    assert logcnt[0].tolist() == [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]


def test_random_float_loads(group):
    g = torch.Generator().manual_seed(5)
    load = (torch.rand(3, 32, generator=g) * 1000).round() / 8  # exact in JSON and f32
    for policy in ("eplb", "balanced"):
        compare(load.tolist(), load, (48, 8, 2, 16), policy)
    # float64 and int32 inputs are converted, as EPLB does.
    a = epx.balancer.rebalance_experts(load.double(), 48, 8, 2, 16)[0]
    b = epx.balancer.rebalance_experts(load, 48, 8, 2, 16)[0]
    assert torch.equal(a, b)


def test_errors(group):
    try:
        epx.balancer.rebalance_experts(torch.tensor(EXAMPLE), 15, 4, 2, 8)
        raise AssertionError("no error")
    except epx.Error as e:
        assert e.code == epx.ErrorCode.InvalidArgument and "num_replicas" in str(e), str(e)
    try:
        epx.balancer.rebalance_experts(torch.tensor(EXAMPLE), 16, 4, 2, 8, policy="best")
        raise AssertionError("no error")
    except epx.Error as e:
        assert "policy" in str(e)


def test_pipeline(group):
    import epx.pipeline as pp
    s = pp.make_schedule("1f1b", 4, 8)
    pp.validate(s)
    assert s.ranks == 4 and s.microbatches == 8 and len(s.ops) == 4
    sim = pp.simulate(s, pp.Costs(f=1, b=2, w=1))
    assert sim.makespan > 0 and len(sim.bubble) == 4
    # The per-stage and per-(rank, chunk) forms: equal entries give the same
    # makespan; a slower last stage gives a longer one.
    c = pp.Costs(f=1, b=2, w=1)
    assert pp.simulate(s, [c] * 4).makespan == sim.makespan
    assert pp.simulate(s, [[c]] * 4).makespan == sim.makespan
    assert pp.simulate(s, [c] * 3 + [pp.Costs(f=2, b=4, w=2)]).makespan > sim.makespan
    try:
        pp.simulate(s, [c] * 3)
        raise AssertionError("no error")
    except epx.Error as e:
        assert "3 stage costs" in str(e), str(e)
    assert repr(s.ops[0][0]) == "F(0,0)"
    choice = pp.choose_schedule(4, 8, pp.Costs(f=1, b=2, w=1))
    assert choice.schedule.ranks == 4 and choice.reason
    assert pp.timeline_svg(s, sim).startswith("<")
    try:
        pp.dualpipe(7, 14)
        raise AssertionError("no error")
    except epx.Error as e:
        assert "even" in str(e)


if __name__ == "__main__":
    harness.run([test_example_both_policies, test_published_phy2log, test_random_float_loads, test_errors,
                 test_pipeline])
