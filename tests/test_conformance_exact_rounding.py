"""Conformance runs cpu_sim with exact rounding (issue 21): every multiply-accumulate step is
rounded to the accumulator's dtype, as the kernel IR says and as a GPU does.

cpu_sim's default form of a matched multiply-accumulate loop sums in float64 and rounds once
(backends/cpu_sim/vectorize.py). These tests pin why conformance does not use it: it hides a
multiply-accumulate unit that keeps too few bits, and its error profile is so much better than
per-step f32 sums that a correct per-step kernel would read as a precision regression."""

from __future__ import annotations

import pytest

import hal.backends.cpu_sim.faults  # noqa: F401  (registers the simulator's faults)
from hal.backends_registry import get_backend
from hal.conformance import runner
from hal.conformance.cases import case_spec, get_case, make_inputs
from hal.conformance.compare import check
from hal.conformance.error_profile import compare_profiles
from hal.conformance.tolerance import graph_bounds
from hal.devices.loader import load_spec
from hal.lowering.options import LoweringOptions

MAC_FAULT = LoweringOptions.planting("sim_mac_bf16_accumulator")


def _checked(cid: str, dev: str, *, exact: bool, options=None) -> dict:
    case = get_case(cid)
    g = case.graph()
    inputs = make_inputs(g, case.dist, case.seed)
    prim, bounds = graph_bounds(g, inputs)
    kw = {"lowering_options": options} if options is not None else {}
    outs = get_backend("cpu_sim").run_graph(g, inputs, case_spec(case, load_spec(dev)),
                                            compare_reference=False, exact_rounding=exact,
                                            **kw).outputs
    return {o.name: check(outs[o.name], bounds[p.name])
            for o, p in zip(g.outputs, prim.outputs, strict=True)}


def test_conformance_sets_exact_rounding():
    assert runner.EXACT_ROUNDING is True


@pytest.mark.parametrize("dev", ["h100-sxm", "mi300x"])
@pytest.mark.parametrize("cid", ["contraction/matmul/f32/33x65x31",
                                 "fused/attention/f32/1x2x2x33x32"])
def test_bf16_accumulator_hides_in_the_fast_form_and_fails_conformance(cid, dev):
    # the fast (float64 contraction) form never runs the per-step accumulator: the fault hides
    fast = _checked(cid, dev, exact=False, options=MAC_FAULT)
    assert all(c.ok for c in fast.values()), {k: c.used for k, c in fast.items()}
    # per-step rounding shows it, far outside the bound, and conformance fails the case
    exact = _checked(cid, dev, exact=True, options=MAC_FAULT)
    assert any(c.used > 10 for c in exact.values()), {k: c.used for k, c in exact.items()}
    rec = runner.execute(get_case(cid), "cpu_sim", dev, lowering=MAC_FAULT)
    assert rec["verdict"] == "fail" and "outside the bound" in rec["reason"], rec
    assert runner.execute(get_case(cid), "cpu_sim", dev)["verdict"] == "pass"


@pytest.mark.parametrize("cid", ["contraction/matmul/f32/64x64x64",
                                 "fused/attention/f32/1x4x2x1x32/decode_t1500"])
def test_fast_form_profile_would_flag_a_correct_per_step_kernel(cid):
    """A backend summing in f32 step by step, exactly as lowered (cpu_sim exact), is a
    precision regression against the fast form's profile, and none against the exact one's."""
    exact = _checked(cid, "h100-sxm", exact=True)
    fast = _checked(cid, "h100-sxm", exact=False)
    assert all(c.ok for c in exact.values())
    assert any(p["regression"] for p in compare_profiles(exact, fast).values())
    assert not any(p["regression"] for p in compare_profiles(exact, exact).values())
