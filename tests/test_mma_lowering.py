"""Matrix-unit matmul kernels (hal.lowering.matmul_mma) match the float64 reference on every
spec with a matrix instruction: odd shapes (masked tiles, scalar tile fills), a transposed
B (a torch Linear weight, [N, K] k-contiguous), batches, a dual GEMM with a SwiGLU epilogue,
and a norm fused as A's prologue."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f16, f32
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.kernel.ir import Stmt, VecCopy
from hal.lowering import lower_group
from hal.reference import random_inputs


def walk_stmts(stmts):
    """Every statement of a kernel body, nested bodies included."""
    for st in stmts:
        yield st
        for value in vars(st).values():
            if isinstance(value, list) and value and isinstance(value[0], Stmt):
                yield from walk_stmts(value)

SPECS = ["h100-sxm", "a100-sxm", "mi300x", "mi250x-gcd", "scratch-npu"]
# sm_90a specs take the Hopper kernel (hal.lowering.matmul_wgmma) where TMA can feed it,
# the mma.sync kernel otherwise (tests/test_wgmma_lowering.py pins which)
MATRIX = ("mma", "wgmma")


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _run(g, spec_name, nodes=None):
    spec = load_spec(spec_name)
    grp = make_group(g, nodes or g.nodes, "g")
    (k,) = lower_group(grp, spec)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, groups=[grp])
    return k, r


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("m,k,n,tb,batch", [(64, 64, 64, False, 0), (37, 40, 24, True, 0),
                                            (33, 19, 17, False, 0), (16, 48, 32, False, 3)])
def test_matmul_matches_reference(spec_name, m, k, n, tb, batch):
    b = GraphBuilder("mm")
    lead = (batch,) if batch else ()
    x = b.input("x", bf16, (*lead, m, k))
    w = b.input("w", bf16, (*lead, n, k) if tb else (*lead, k, n))
    b.output(b.op("matmul", x, w, transpose_b=tb))
    kern, r = _run(b.build(), spec_name)
    assert kern.meta.plan.strategy in MATRIX
    assert r.report["ok"], r.report


@pytest.mark.parametrize("spec_name", SPECS)
def test_dual_gemm_swiglu(spec_name):
    b = GraphBuilder("swiglu")
    x = b.input("x", bf16, (40, 64))
    wg, wu = b.input("wg", bf16, (64, 48)), b.input("wu", bf16, (64, 48))
    gate = b.op("matmul", x, wg)
    up = b.op("matmul", x, wu)
    b.output(b.op("mul", b.op("mul", gate, b.op("sigmoid", gate)), up))   # silu(gate) * up
    kern, r = _run(b.build(), spec_name)
    p = kern.meta.plan
    assert p.strategy in MATRIX and p.detail("contractions") == 2
    assert r.report["ok"], r.report


@pytest.mark.parametrize("spec_name", ["h100-sxm", "mi300x"])
def test_f16_and_cast_prologue(spec_name):
    """A cast inside the group is computed element by element into the tile (scalar fill)."""
    b = GraphBuilder("castmm")
    x = b.input("x", f32, (24, 32))
    w = b.input("w", f16, (32, 16))
    b.output(b.op("matmul", b.op("cast", x, dtype=f16), w))
    kern, r = _run(b.build(), spec_name)
    assert kern.meta.plan.strategy == "mma"
    # x reaches its tile element by element (the cast), w by 128-bit vector copies
    assert any(isinstance(s, VecCopy) for s in walk_stmts(kern.body))
    assert r.report["ok"], r.report


@pytest.mark.parametrize("spec_name", ["h100-sxm", "mi300x", "scratch-npu"])
def test_qkv_siblings_of_different_n(spec_name):
    """Fused Q, K, V projections with grouped-query attention (different N): one kernel of
    column-panel segments on the matrix unit, with a bias epilogue on Q."""
    b = GraphBuilder("qkv")
    x = b.input("x", bf16, (37, 48))
    ws = [b.input(f"w{c}", bf16, (n, 48)) for c, n in zip("qkv", (40, 16, 16), strict=True)]
    q, k, v = (b.op("matmul", x, w, transpose_b=True) for w in ws)
    q = b.op("add", q, b.op("broadcast_to", b.input("bq", bf16, (40,)), shape=[37, 40]))
    for val in (q, k, v):
        b.output(val)
    kern, r = _run(b.build(), spec_name)
    p = kern.meta.plan
    # sm_90a: the Hopper GEMM takes sibling segments too (issue 15)
    assert p.strategy == ("wgmma" if spec_name == "h100-sxm" else "mma")
    assert p.detail("column_segments") == (40, 16, 16)
    assert r.report["ok"], r.report
