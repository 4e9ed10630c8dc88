"""Findings of the issue-16 fuzz campaign (benchmarks/fuzz_campaign.py), each as its reproduction.

Session 6 (seed 6, 2026-12-02): random graph random/s6/1223 failed on h100-sxm, mi300x and
scratch-npu alike: sigmoid of about -88.75 (a row sum broadcast back and added twice) gave
0.0 on cpu_sim, fused and unfused, where the float64 reference stores the f32 subnormal
2.85e-39, and the error model allowed only 3 ulps around it. The kernels are not wrong:
sigmoid is 1/(1 + e^-x) in the compute dtype everywhere (cpu_sim, the CUDA/HIP spelling
in hal.render.cstyle, torch's own CPU kernel), and e^-x overflows to inf for
x < -ln(FLT_MAX) = -88.72, so the result is 0 where the exact value is below 1/FLT_MAX.
The error model now says so (ErrorModel.zero_below_inverse_max): such a result may be 0,
and only there.
"""

from __future__ import annotations

import numpy as np
import pytest

from hal.conformance.compare import check
from hal.conformance.random_graphs import random_case
from hal.conformance.runner import execute
from hal.conformance.tolerance import output_bounds
from hal.dtypes import bf16, cast, f32
from hal.ir import GraphBuilder


def _unary(op: str, dt, n: int):
    b = GraphBuilder("t")
    b.output(b.op(op, b.input("x", dt, (n,))))
    return b.build()


@pytest.mark.parametrize("spec", ["h100-sxm", "mi300x", "scratch-npu"])
def test_random_s6_1223_passes(spec, monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")
    rec = execute(random_case(6, 1223), "cpu_sim", spec, 0)
    assert rec["verdict"] == "pass", rec.get("reason")


@pytest.mark.parametrize("dt", [f32, bf16])
def test_sigmoid_may_be_zero_where_its_exponential_overflows(dt):
    x = cast(np.array([-89.0, -90.0, -92.0]), dt)   # exact in bf16 too
    (bd,) = output_bounds(_unary("sigmoid", dt, 3), {"x": x}).values()
    assert (bd.ref > 0).all()   # the exact values are (subnormal) non-zeros
    assert check(np.zeros(3, dt.np_dtype), bd).ok, "1/(1+inf) = 0 must pass"
    with np.errstate(over="ignore"):
        kernel = (np.float32(1) / (np.float32(1) + np.exp(-x.astype(np.float32))))
    assert check(cast(kernel, dt), bd).ok


def test_sigmoid_of_a_normal_result_is_still_held_to_its_ulps():
    x = cast(np.array([-80.0, -40.0, 0.5]), f32)
    (bd,) = output_bounds(_unary("sigmoid", f32, 3), {"x": x}).values()
    assert not check(np.zeros(3, np.float32), bd).ok        # 1.8e-35 is a normal f32
    assert not check((bd.ref * (1 + 1e-5)).astype(np.float32), bd).ok


def test_exp_has_no_such_allowance():
    x = cast(np.array([-95.0, -100.0]), f32)   # exp's results are subnormal, not zero
    (bd,) = output_bounds(_unary("exp", f32, 2), {"x": x}).values()
    assert not check(np.zeros(2, np.float32), bd).ok
