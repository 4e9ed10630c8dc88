"""Runs of ldmatrix/mma executed as one batched call (backends/cpu_sim/mma_batch.py) give
bitwise the outputs and the counters of issuing every statement on its own, and a layout
bug planted in the lowering still changes the numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sim_kernels import attention_graph, lowered_kernel

import hal.backends.cpu_sim.codegen as codegen
from hal.backends.cpu_sim import mma_batch, simulator
from hal.backends.cpu_sim.checks import SimulationError
from hal.dtypes import cast, dtype
from hal.ir import GraphBuilder
from hal.kernel.ir import BufferParam
from hal.lowering.options import LoweringOptions


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _matmul(dt: str, m: int, k: int, n: int):
    b = GraphBuilder("mm")
    d = dtype(dt)
    b.output(b.op("matmul", b.input("a", d, (m, k)), b.input("b", d, (k, n))))
    return b.build(), "matmul"


def _two_matmuls(dt: str, m: int, k: int, n: int):
    """x @ w1 and x @ w2 of different widths: one kernel whose blocks take one of two
    uniform branches, so a wave's runs see a mask of whole warps (batched: the active)."""
    b = GraphBuilder("mm2")
    d = dtype(dt)
    x = b.input("a", d, (m, k))
    b.output(b.op("matmul", x, b.input("b", d, (k, n))))
    b.output(b.op("matmul", x, b.input("w2", d, (k, n // 4))))
    return b.build(), "matmul"


def _values(rng, n: int, wide: bool) -> np.ndarray:
    x = rng.standard_normal(n)
    return x * np.exp2(rng.integers(-40, 40, n)) if wide else x


def _run(k, spec, batch: bool, monkeypatch, seed: int = 0, wide: bool = False,
         options=None):
    monkeypatch.setattr(codegen, "BATCH_MMA_RUNS", batch)
    simulator._CACHE.clear()
    rng = np.random.default_rng(seed)
    args = {p.name: np.ascontiguousarray(cast(_values(rng, p.numel, wide), p.dtype)).reshape(-1)
            for p in k.params if isinstance(p, BufferParam)}
    st = simulator.simulate(k, args, spec, max_lanes=1 << 12, options=options)
    src = simulator.compiled(k, options).source
    simulator._CACHE.clear()
    return args, st, src


def _same(k, spec, monkeypatch, **kw):
    new, st_new, src = _run(k, spec, True, monkeypatch, **kw)
    old, st_old, src_old = _run(k, spec, False, monkeypatch, **kw)
    assert "MB.run(" in src and "MB.run(" not in src_old
    if k.name.startswith("k0_multi"):   # runs under a branch's mask of whole warps
        assert re.search(r"MB.run\(W, _run\d+, \[.*\], _m\d+\)", src)
    for name in old:
        assert old[name].tobytes() == new[name].tobytes(), name
    for field in ("matrix_flops", "bank_conflicts", "shared_bytes_read",
                  "shared_bytes_written", "global_bytes_read", "global_bytes_written",
                  "barriers", "flops_by_dtype"):
        assert getattr(st_new, field) == getattr(st_old, field), field
    return new


CASES = [
    ("a100-sxm", _matmul, ("bf16", 96, 80, 72)),
    ("a100-sxm", _matmul, ("f16", 64, 256, 40)),
    ("a100-sxm", _matmul, ("bf16", 33, 257, 31)),
    ("a100-sxm", _two_matmuls, ("bf16", 64, 96, 256)),
    ("h100-sxm", attention_graph, ("bf16", (1, 2, 40, 64), (1, 2, 72, 64), True)),
    ("a100-sxm", attention_graph, ("f16", (2, 1, 16, 32), (2, 1, 48, 32), False)),
    ("mi300x", _matmul, ("bf16", 64, 96, 64)),
]


@pytest.mark.parametrize("device,build,args", CASES)
def test_batched_runs_are_bitwise_the_one_by_one_issue(device, build, args, monkeypatch):
    k, spec = lowered_kernel(*build(*args), device)
    _same(k, spec, monkeypatch)


def test_wide_exponent_range_stays_bitwise(monkeypatch):
    """Values spread over 2^+-40: the float64 sums of the exact products round, and the
    batched products must round them exactly as the one-by-one matmuls do."""
    k, spec = lowered_kernel(*_matmul("bf16", 64, 128, 64), "a100-sxm")
    for seed in range(3):
        _same(k, spec, monkeypatch, seed=seed, wide=True)


@pytest.mark.parametrize("fault,build,args", [
    ("mma_swapped_fragment_halves", _matmul, ("bf16", 64, 64, 64)),
    ("mma_wrong_k_order", _matmul, ("bf16", 64, 64, 64)),
    ("attention_pv_fragment_transposed", attention_graph,
     ("bf16", (1, 1, 32, 64), (1, 1, 64, 64), False)),
])
def test_planted_layout_bugs_still_change_the_numbers(fault, build, args, monkeypatch):
    graph, kind = build(*args)
    good, spec = lowered_kernel(graph, kind, "a100-sxm")
    bad, _ = lowered_kernel(graph, kind, "a100-sxm", LoweringOptions.planting(fault))
    out_good = _same(good, spec, monkeypatch)
    out_bad = _same(bad, spec, monkeypatch)
    out = next(p.name for p in good.params if p.name not in ("a", "b", "q", "k", "v")
               and isinstance(p, BufferParam))
    assert out_good[out].tobytes() != out_bad[out].tobytes()


def test_missing_wait_is_still_the_race_one_by_one_reports(monkeypatch):
    graph, kind = _matmul("bf16", 64, 256, 64)
    k, spec = lowered_kernel(graph, kind, "a100-sxm", LoweringOptions.planting("missing_cp_async_wait"))
    errors = []
    for batch in (True, False):
        with pytest.raises(SimulationError) as e:
            _run(k, spec, batch, monkeypatch)
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    assert "cp.async" in errors[0]


def test_run_plan_refuses_what_it_cannot_batch():
    L, M = mma_batch.LdmOp, mma_batch.MmaOp
    lay = "nv_m16n8k16_b16"
    # the second mma reads the first one's D as its A operand
    p = mma_batch.plan_run([L(0, 0, 0, 4, False, 0), L(1, 0, 1, 2, False, 1),
                            M(lay, 2, 0, 0, 0, 1, 0, 2, 0, 2), M(lay, 0, 0, 2, 0, 1, 0, 3, 0, 3)])
    assert p.why_not is not None and "same run" in p.why_not
    # a K chain of two steps over two n tiles: a 1 x 2 grid, two levels
    p = mma_batch.plan_run([L(0, 0, 0, 4, False, 0), L(1, 0, 1, 4, False, 1),
                            M(lay, 2, 0, 0, 0, 1, 0, 2, 0, 2), M(lay, 2, 4, 0, 0, 1, 4, 2, 4, 3),
                            L(0, 0, 0, 4, False, 4), L(1, 0, 1, 4, False, 5),
                            M(lay, 2, 0, 0, 0, 1, 0, 2, 0, 6), M(lay, 2, 4, 0, 0, 1, 4, 2, 4, 7)])
    assert p.why_not is None and p.grid == (1, 2) and len(p.level_ops) == 2
