"""fusion.veto_reuse: the lowering veto of a matmul candidate that only grows its epilogue is
answered from the group it grows. Every such answer must be the one a real lowering gives,
the plans must equal those made lowering every candidate, and each condition of
same_verdict must refuse what it guards."""

from __future__ import annotations

import importlib
from dataclasses import replace

import pytest

from hal.conformance.cases import get_case
from hal.devices.loader import load_spec
from hal.fusion.group import make_group
from hal.fusion.veto_reuse import same_verdict
from hal.lowering import lower_group, memo, plan_group

fusion_plan = importlib.import_module("hal.fusion.plan")   # (hal.fusion.plan: the function)

CASES = ["fused/matmul_bias_gelu_tanh/bf16/64x128x96", "fused/matmul_bias_relu/f16/64x128x96",
         "fused/matmul_bias_gelu/bf16/256x320x128", "model/gpt_block/bf16/d64-s16",
         "model/tiny_gpt/f32/s32"]
SPECS = ["h100-sxm", "mi300x"]


def _plan(case_id: str, spec):
    return fusion_plan.plan(get_case(case_id).graph(), spec, measure=None)


@pytest.mark.parametrize("device", SPECS)
def test_every_reused_verdict_is_the_lowerings(monkeypatch, device):
    spec = load_spec(device)
    answered = []

    def checked(cand, base, spec_, plan_of):
        ok = same_verdict(cand, base, spec_, plan_of)
        if ok:   # what the veto would have found lowering it
            with memo.disabled():
                kernels = lower_group(cand, spec_)
            assert kernels
            for k in kernels:
                assert k.shared_bytes <= spec_.shared_mem_per_block
                assert k.block <= spec_.max_threads_per_block
            answered.append(cand.ops)
        return ok

    monkeypatch.setattr(fusion_plan, "same_verdict", checked)
    memo.clear_all()   # (a verdict memoised across plans would skip the veto)
    for case_id in CASES:
        _plan(case_id, spec)
    assert len(answered) >= 10   # the epilogues of these graphs grow many steps


@pytest.mark.parametrize("device", SPECS)
def test_plans_equal_those_lowering_every_candidate(monkeypatch, device):
    spec = load_spec(device)
    memo.clear_all()
    reused = [_plan(c, spec).to_dict() for c in CASES]
    monkeypatch.setattr(fusion_plan, "same_verdict", lambda *a: False)
    memo.clear_all()
    lowered = [_plan(c, spec).to_dict() for c in CASES]
    assert reused == lowered


def _grown_pair(spec):
    """(graph, cand, base): the final matmul group of a bias+relu matmul, and that group
    without its last epilogue node (the relu)."""
    p = _plan("fused/matmul_bias_relu/f16/64x128x96", spec)
    group = next(g for g in p.groups if g.kind == "matmul")
    assert group.nodes[-1].op == "maximum"
    cand = make_group(p.graph, group.nodes, "cand")
    base = make_group(p.graph, group.nodes[:-1], "cand")
    return p.graph, cand, base


def test_conditions_refuse_what_they_guard():
    spec = load_spec("h100-sxm")
    graph, cand, base = _grown_pair(spec)

    def plan_of(g):
        return plan_group(g, spec)

    assert same_verdict(cand, base, spec, plan_of)
    # 3. a plan differing in what the emitters read (the strategy, the tiles)
    for change in ({"strategy": "simt"}, {"tiles": (("bm", 1),)}, {"stages": 9}):
        def other(g, change=change):
            plan = plan_of(g)
            return replace(plan, **change) if g is cand else plan
        assert not same_verdict(cand, base, spec, other)
    # the base must hold the contraction, and the candidate must be a matmul group
    dot = next(n for n in cand.nodes if n.op in ("matmul", "dot_general"))
    no_dot = make_group(graph, [n for n in cand.nodes if n is not dot], "cand")
    assert not same_verdict(cand, no_dot, spec, plan_of)
    assert not same_verdict(no_dot, base, spec, plan_of)
    # the base must be some of the candidate's nodes (here it is the larger group)
    assert not same_verdict(base, cand, spec, plan_of)
