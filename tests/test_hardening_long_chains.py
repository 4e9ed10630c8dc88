"""Long chains of elementwise ops (issue 16).

Reproductions: about 350 or more fused elementwise ops in a chain raised RecursionError in
hal/lowering/expr.py (and then in the cost model's issued-bytes walk), in both `fuse` and
`run`; `--no-fuse` built each one-node group with a walk over the whole graph (quadratic).
The speed itself is measured in benchmarks/results/issue-16.md, not here.
"""

from __future__ import annotations

import sys

import numpy as np

from hal.devices.loader import load_spec
from hal.ir.text import parse_graph


def chain(n: int, width: int = 32) -> str:
    lines = ["graph chain {", f"  input %x: f32[{width}]", f"  input %y: f32[{width}]"]
    prev = "x"
    for i in range(n):
        rhs = f"add(%{prev}, %y)" if i % 3 == 2 else f"tanh(%{prev})"
        lines.append(f"  %v{i}: f32[{width}] = {rhs}")
        prev = f"v{i}"
    return "\n".join([*lines, f"  output %{prev}", "}"])


def test_lowering_a_fused_chain_far_past_the_recursion_limit():
    from hal.fusion.cost import group_cost
    from hal.fusion.group import make_group
    from hal.lowering import lower_group

    n = 3 * sys.getrecursionlimit()
    g = parse_graph(chain(n))
    spec = load_spec("h100-sxm")
    group = make_group(g, g.nodes, "all")
    (k,) = lower_group(group, spec)
    assert k.name and group_cost(group, spec).dram_bytes > 0


def test_a_chain_of_400_ops_fuses_and_matches_the_reference(monkeypatch):
    from hal.backends.cpu_sim.backend import CpuSimBackend
    from hal.fusion import plan
    from hal.reference import evaluate

    monkeypatch.setenv("HAL_MEASURE", "off")
    g = parse_graph(chain(400))
    spec = load_spec("h100-sxm")
    p = plan(g, spec)
    assert len(p.groups) == 1, [gr.name for gr in p.groups]
    rng = np.random.default_rng(0)
    inputs = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    got = CpuSimBackend().run_graph(g, inputs, spec).outputs
    want = evaluate(g, inputs)
    (name,) = got
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)


def test_unfused_groups_are_built_without_walking_the_graph_per_node(monkeypatch):
    from hal.fusion import group as group_mod

    g = parse_graph(chain(300))
    calls = {"users": 0}
    real = type(g).users

    def counting(self):
        calls["users"] += 1
        return real(self)

    monkeypatch.setattr(type(g), "users", counting)
    groups = group_mod.trivial_groups(g)
    assert len(groups) == 300 and calls["users"] == 1
    assert [o.name for o in groups[5].outputs] == ["v5"]


def _lowered_ops(monkeypatch, n: int, tree: bool = False) -> tuple[int, int]:
    """(ops the group kinds planned or lowered while planning a fused chain of n ops,
    kernels in the plan)."""
    from hal.fusion import plan
    from hal.lowering import registry

    count = {"ops": 0}
    real = registry.kind_rule

    class Counting:
        def __init__(self, rule):
            self.rule = rule

        def plan(self, group, spec):
            count["ops"] += len(group.nodes)
            return self.rule.plan(group, spec)

        def lower(self, group, plan_, spec, options):
            count["ops"] += len(group.nodes)
            return self.rule.lower(group, plan_, spec, options)

    monkeypatch.setattr(registry, "kind_rule", lambda kind: Counting(real(kind)))
    text = chain(n)
    if tree:   # two chains joined by an add: an in-tree rather than a line
        text = text.replace(f"  output %v{n - 1}", f"  %w: f32[32] = tanh(%y)\n"
                            f"  %z: f32[32] = add(%v{n - 1}, %w)\n  output %z")
    p = plan(parse_graph(text), load_spec("h100-sxm"), measure="off")
    return count["ops"], p.kernel_count()


def test_planning_a_fused_chain_is_linear_in_its_length(monkeypatch):
    # Reproduction: the greedy planner priced and lowered the growing group at each of
    # the n merges: n^2/2 ops lowered (800 ops: 320,000 lowered, 13.6 s of CPU).
    ops_300, k300 = _lowered_ops(monkeypatch, 300)
    ops_600, k600 = _lowered_ops(monkeypatch, 600)
    assert k300 == k600 == 1
    assert ops_600 <= 2.2 * ops_300, (ops_300, ops_600)   # quadratic would be 4x
    assert ops_600 <= 8 * 600
    ops_tree, k_tree = _lowered_ops(monkeypatch, 600, tree=True)
    assert k_tree == 1 and ops_tree <= 8 * 602


def test_a_chain_over_the_register_estimate_is_cut_in_n_log_n(monkeypatch):
    # 1200 ops do not fit one kernel's register estimate: the line is cut into the
    # longest passing segments (doubling, then bisection) instead of n greedy merges
    ops_1200, k1200 = _lowered_ops(monkeypatch, 1200)
    ops_2400, k2400 = _lowered_ops(monkeypatch, 2400)
    assert 2 <= k1200 < k2400 <= 8
    assert ops_2400 <= 2.6 * ops_1200, (ops_1200, ops_2400)   # quadratic would be 4x
    assert ops_2400 <= 4 * 2400 * 12    # ~ c n log2(n); n^2/2 would be 2.9 million


def test_short_chains_are_left_to_the_greedy_pass():
    from hal.fusion import plan
    from hal.fusion.chains import LONG_CHAIN

    short = plan(parse_graph(chain(LONG_CHAIN - 1)), load_spec("h100-sxm"), measure="off")
    long = plan(parse_graph(chain(LONG_CHAIN)), load_spec("h100-sxm"), measure="off")
    assert not any("chain of" in d.reason for d in short.decisions)
    assert [d.reason.split(":")[0] for d in long.decisions if d.fused] == \
        [f"fused a chain of {LONG_CHAIN} elementwise ops at once"]
    assert short.kernel_count() == long.kernel_count() == 1
