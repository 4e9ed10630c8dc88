"""The Hopper matmul path (hal.lowering.matmul_wgmma) on cpu_sim: the plan says which path
and why, the kernel is a TMA producer + wgmma consumer pipeline, results match the float64
reference (tile edges crossing the tensor give zeros), and the simulator names the
asynchronous hazards (accumulator read before wait_group, a stage read before its mbarrier
phase, a wrong transaction count, a wrong phase parity)."""

from __future__ import annotations

import dataclasses

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.conformance.cases import get_case
from hal.conformance.runner import execute
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f8e4m3fn, f8e5m2, f16
from hal.errors import HalError
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.kernel import ir_async as ira
from hal.kernel.ir import stmt_bodies, walk_stmts
from hal.lowering import lower_group
from hal.lowering.options import LoweringOptions
from hal.reference import random_inputs
from hal.roofline import peak

CASE = "fused/matmul_bias_relu/bf16/64x128x96"


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _mm(m, k, n, tb=False, batch=0, dt=bf16):
    b = GraphBuilder("mm")
    lead = (batch,) if batch else ()
    x = b.input("x", dt, (*lead, m, k))
    w = b.input("w", dt, (*lead, n, k) if tb else (*lead, k, n))
    b.output(b.op("matmul", x, w, transpose_b=tb))
    return b.build()


def _run(g, spec_name, kernel_edit=None):
    spec = load_spec(spec_name)
    grp = make_group(g, g.nodes, "g")
    (k,) = lower_group(grp, spec)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, groups=[grp])
    return k, r


@pytest.mark.parametrize("spec_name", ["h100-sxm", "h200"])
@pytest.mark.parametrize("m,k,n,tb,batch,dt", [
    (64, 64, 64, False, 0, bf16),      # one consumer warpgroup, N-major B (trans_b)
    (200, 136, 72, True, 0, bf16),     # two consumers, K-major B, edges in M, N and K
    (300, 520, 264, True, 0, bf16),    # several row panels, a K tail crossing the box
    (96, 64, 128, False, 3, f16),      # batch on grid z, 3-D tensor maps
])
def test_hopper_path_matches_reference(spec_name, m, k, n, tb, batch, dt):
    kern, r = _run(_mm(m, k, n, tb, batch, dt), spec_name)
    plan = kern.meta.plan
    assert plan.strategy == "wgmma"
    path, why = plan.detail("matmul_path")
    assert path == "wgmma+tma" and "mbarrier ring" in why
    assert plan.math.name.startswith("wgmma.mma_async")
    assert r.report["ok"], r.report
    stmts = list(walk_stmts(kern.body))
    kinds = {type(s) for s in stmts}
    assert {ira.Wgmma, ira.WgmmaCommit, ira.WgmmaWait, ira.TmaLoad, ira.MbarrierInit,
            ira.MbarrierArrive, ira.MbarrierWait, ira.SetMaxNReg} <= kinds
    assert kern.block == 128 * (1 + (2 if m > 64 else 1))
    (roles,) = [s for s in stmts if isinstance(s, ira.Roles)]   # producer / consumers
    assert isinstance(roles.first[0], ira.SetMaxNReg) and not roles.first[0].increase
    assert isinstance(roles.second[0], ira.SetMaxNReg) and roles.second[0].increase
    assert {t.swizzle for t in kern.tensor_maps} == {128}
    assert all(s.align == 1024 for s in kern.shared if s.name.startswith(("a_tile", "b_tile")))
    wg = next(s for s in stmts if isinstance(s, ira.Wgmma))
    assert wg.trans_b == (not tb)


@pytest.mark.parametrize("dt", [f8e4m3fn, f8e5m2])
def test_fp8_takes_wgmma_k32_when_b_is_k_major(dt):
    b = GraphBuilder("mm8")
    x = b.input("x", dt, (200, 160))
    w = b.input("w", dt, (136, 160))
    b.output(b.op("matmul", x, w, transpose_b=True, out_dtype="bf16"))
    kern, r = _run(b.build(), "h200")
    assert kern.meta.plan.strategy == "wgmma" and r.report["ok"], r.report
    assert "k32" in kern.meta.plan.detail("matmul_path")[1]
    assert peak(load_spec("h200"), kern.meta.plan.math) == 1979e12
    kern, r = _run(_mm(64, 64, 64, dt=dt), "h200")     # B [K, N]: fp8 wgmma cannot read it
    assert kern.meta.plan.strategy == "mma" and r.report["ok"]
    assert "K-major only" in kern.meta.plan.detail("matmul_path")[1]


def test_plan_prices_the_wgmma_rate_and_falls_back_with_a_reason():
    spec = load_spec("h100-sxm")
    kern, _ = _run(_mm(64, 64, 64), "h100-sxm")
    assert peak(spec, kern.meta.plan.math) == 989e12
    # K = 19: rows of 38 bytes, which TMA cannot stride: the mma.sync kernel, and why
    kern, r = _run(_mm(33, 19, 17), "h100-sxm")
    plan = kern.meta.plan
    assert plan.strategy == "mma" and r.report["ok"]
    path, why = plan.detail("matmul_path")
    assert path == "mma.sync" and why
    assert peak(spec, plan.math) == 660e12
    # a spec without a warpgroup MMA: no path detail, the mma.sync kernel as before
    kern, _ = _run(_mm(64, 64, 64), "a100-sxm")
    assert kern.meta.plan.strategy == "mma" and kern.meta.plan.detail("matmul_path") is None


def test_dual_gemm_swiglu_on_the_hopper_path():
    b = GraphBuilder("swiglu")
    x = b.input("x", bf16, (96, 64))
    wg = b.input("wg", bf16, (128, 64))
    wu = b.input("wu", bf16, (128, 64))
    gate = b.op("matmul", x, wg, transpose_b=True)
    up = b.op("matmul", x, wu, transpose_b=True)
    b.output(b.op("mul", b.op("mul", gate, b.op("sigmoid", gate)), up))   # silu(gate) * up
    kern, r = _run(b.build(), "h100-sxm")
    assert kern.meta.plan.strategy == "wgmma" and kern.meta.plan.detail("contractions") == 2
    assert r.report["ok"], r.report


@pytest.mark.parametrize("fault,check,words", [
    ("missing_wgmma_wait", "race", ("warpgroup 1", "accumulator", "stage", "phase")),
    ("wrong_mbarrier_tx_count", "bad_mbarrier", ("full_bar", "expect_tx")),
    ("wgmma_wrong_swizzle", None, ()),
    ("tma_box_off_by_one", None, ("outside the bound",)),
    ("wgmma_missing_full_wait", "race", ("before mbarrier phase", "TMA copy", "stage")),
])
def test_planted_hopper_faults_are_caught(fault, check, words):
    assert execute(get_case(CASE), "cpu_sim", "h100-sxm", 0)["verdict"] == "pass"
    r = execute(get_case(CASE), "cpu_sim", "h100-sxm", 0,
                lowering=LoweringOptions.planting(fault))
    assert r["verdict"] == "fail", r
    if check:
        assert r.get("check") == check, r
    for w in words:
        assert w in r["reason"], r["reason"]


def _edited(kern, fn):
    """A copy of the kernel with `fn(stmt)` applied to its statements (in place)."""
    k = dataclasses.replace(kern, body=kern.body)
    for s in walk_stmts(k.body):
        fn(s)
    return k


def test_wrong_phase_parity_is_a_deadlock_and_early_read_a_race():
    from hal.backends.cpu_sim.simulator import simulate
    from hal.kernel.ir import Binary, Const

    spec = load_spec("h100-sxm")
    g = _mm(64, 256, 64, tb=True)
    grp = make_group(g, g.nodes, "g")
    inputs = {k: v for k, v in random_inputs(g, 1).items()}

    def run(kern):
        bufs = {p.name: inputs.get(kern.meta.buffers[p.name]) for p in kern.params}
        for p in kern.params:
            if bufs[p.name] is None:
                import numpy as np
                bufs[p.name] = np.zeros(p.shape, p.dtype.np_dtype)
        return simulate(kern, bufs, spec)

    (kern,) = lower_group(grp, spec)

    def flip(s):   # the consumers wait for the other parity of the full barrier
        if isinstance(s, ira.MbarrierWait) and s.bar.startswith("full"):
            s.parity = Binary("sub", Const(1, s.parity.dtype), s.parity)
    with pytest.raises(HalError, match="deadlock.*full_bar.*never completes"):
        run(_edited(kern, flip))

    (kern,) = lower_group(grp, spec)
    for st in list(walk_stmts(kern.body)):   # the consumers no longer wait for the TMA
        for body in stmt_bodies(st):
            body[:] = [s for s in body if not (isinstance(s, ira.MbarrierWait)
                                               and s.bar.startswith("full"))]
    with pytest.raises(HalError, match="race.*wgmma reads shared a_tile.*before mbarrier "
                                       "phase"):
        run(kern)
