"""Multiply-accumulate loops run as contractions (vectorize.py, contract.py): same counters
as the plain loop, the same values up to one rounding, and faults in the loop still caught."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.simulator import kernel_source, simulate
from hal.backends.cpu_sim.vectorize import match_reduction_loop
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.kernel.ir import Barrier, Binary, BufferParam, Const, For, If, Kernel, Load
from hal.lowering import lower_group

SPEC = load_spec("h100-sxm")


def _matmul_kernel(m: int, n: int, k: int) -> Kernel:
    b = GraphBuilder("mm")
    x, w = b.input("x", f32, (m, k)), b.input("w", f32, (k, n))
    b.output(b.op("matmul", x, w, name="y"))
    g = b.build()
    (kern,) = lower_group(make_group(g, g.nodes, g.name), SPEC)
    return kern


def _attention_kernel(s: int, d: int) -> Kernel:
    b = GraphBuilder("attn")
    q, k, v = (b.input(n, f32, (1, 2, s, d)) for n in "qkv")
    b.output(b.op("scaled_dot_product_attention", q, k, v, causal=True, name="o"))
    g = b.build()
    from hal.fusion.prepare import groups_to_run

    _, groups = groups_to_run(g, SPEC, groups=None, fuse=True, who="test")
    kernels = [kk for grp in groups for kk in lower_group(grp, SPEC)]
    return next(kk for kk in kernels if "attention" in kk.name)


def _args(kern: Kernel, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {p.name: rng.standard_normal(p.numel).astype(np.float32)
            for p in kern.params if isinstance(p, BufferParam)}


def _run_both(kern: Kernel) -> tuple[dict, dict, dict, dict]:
    a = _args(kern)
    b = {n: v.copy() for n, v in a.items()}
    exact = simulate(kern, a, SPEC, exact_rounding=True).to_dict()
    fast = simulate(kern, b, SPEC).to_dict()
    return a, b, exact, fast


@pytest.mark.parametrize("kern", [_matmul_kernel(130, 70, 45), _matmul_kernel(64, 64, 256),
                                  _attention_kernel(100, 32)],
                         ids=["matmul-tails", "matmul", "attention-tails"])
def test_contraction_matches_the_plain_loop(kern: Kernel) -> None:
    assert "_Reduction(W" in kernel_source(kern), "the kernel's inner loop was not matched"
    a, b, exact, fast = _run_both(kern)
    for key in exact:
        if key != "wall_s":
            assert exact[key] == fast[key], key
    for name in a:
        scale = float(np.abs(a[name]).max()) or 1.0
        # one rounding of a float64 sum against a rounding per multiply-add
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-5 * scale)


def _loops(body, path=()):
    for i, s in enumerate(body):
        if isinstance(s, For):
            yield body, i, s
            yield from _loops(s.body)
        elif isinstance(s, If):
            yield from _loops(s.then)
            yield from _loops(s.orelse)


def _matched(kern: Kernel):
    gs = {p.name for p in kern.params if isinstance(p, BufferParam)} | {b.name for b in kern.shared}
    loc = {b.name for b in kern.locals}
    for body, i, s in _loops(kern.body):
        if match_reduction_loop(s, gs, loc) is not None:
            return body, i, s
    raise AssertionError("no matched loop")


def _rebuilt(kern: Kernel) -> Kernel:
    # the planted edits below mutate statement lists in place; a fresh Kernel object
    # (and a new structure key) makes the simulator translate it again
    return replace(kern, name=kern.name + "_planted")


def test_missing_barrier_before_contraction_is_a_race() -> None:
    kern = _matmul_kernel(64, 64, 64)
    body, i, _ = _matched(kern)
    # the barrier between the tile stores and the multiply-accumulate loop
    j = max(n for n in range(i) if isinstance(body[n], Barrier))
    del body[j]
    with pytest.raises(SimulationError) as e:
        simulate(_rebuilt(kern), _args(kern), SPEC)
    assert e.value.kind == "race"


def test_out_of_bounds_operand_in_contraction_is_caught() -> None:
    kern = _matmul_kernel(64, 64, 64)
    body, i, loop = _matched(kern)
    new_body = []
    done = False
    for s in loop.body:
        init = getattr(s, "init", None)
        if not done and isinstance(init, Load):
            size = next(b.size for b in kern.shared if b.name == init.buffer)
            s = replace(s, init=replace(init, index=Binary("add", init.index,
                                                           Const(size, init.index.dtype))))
            done = True
        new_body.append(s)
    assert done
    body[i] = replace(loop, body=new_body)
    with pytest.raises(SimulationError) as e:
        simulate(_rebuilt(kern), _args(kern), SPEC)
    assert e.value.kind == "out_of_bounds"
    with pytest.raises(SimulationError) as e2:
        simulate(_rebuilt(kern), _args(kern), SPEC, exact_rounding=True)
    assert e2.value.kind == "out_of_bounds"
    assert (e.value.block, e.value.thread) == (e2.value.block, e2.value.thread)
    simulate(_rebuilt(kern), _args(kern), SPEC, check=False)   # unchecked: clipped, no crash


def test_race_check_by_lane_groups_reports_as_the_per_lane_check(monkeypatch) -> None:
    """contract.Reduction decides 'no race' once per group of lanes reading the same
    words; a race still goes to the per-lane check, so the report is the same."""
    from hal.backends.cpu_sim.contract import Reduction

    kern = _matmul_kernel(64, 64, 64)
    body, i, _ = _matched(kern)
    j = max(n for n in range(i) if isinstance(body[n], Barrier))
    del body[j]
    planted = _rebuilt(kern)
    errs = []
    for grouped in (True, False):
        if not grouped:
            monkeypatch.setattr(Reduction, "_no_race_by_groups", lambda self, op: False)
        with pytest.raises(SimulationError) as e:
            simulate(planted, _args(kern), SPEC)
        errs.append(e.value)
    assert errs[0].kind == errs[1].kind == "race"
    assert (str(errs[0]), errs[0].block, errs[0].thread, errs[0].index) == \
        (str(errs[1]), errs[1].block, errs[1].thread, errs[1].index)


def test_race_check_by_lane_groups_is_taken_and_changes_nothing(monkeypatch) -> None:
    from hal.backends.cpu_sim.contract import Reduction

    kern = _attention_kernel(256, 32)
    taken = []
    orig = Reduction._no_race_by_groups

    def spy(self, op):
        r = orig(self, op)
        taken.append(r)
        return r

    monkeypatch.setattr(Reduction, "_no_race_by_groups", spy)
    a = _args(kern)
    b = {n: v.copy() for n, v in a.items()}
    s1 = simulate(kern, a, SPEC, jobs=1).to_dict()
    monkeypatch.setattr(Reduction, "_no_race_by_groups", lambda self, op: False)
    s2 = simulate(kern, b, SPEC, jobs=1).to_dict()
    assert any(taken), "the grouped race check never applied"
    s1.pop("wall_s"), s2.pop("wall_s")
    assert s1 == s2 and all(a[n].tobytes() == b[n].tobytes() for n in a)
