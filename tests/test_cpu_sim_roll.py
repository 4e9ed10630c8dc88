"""roll.py emits runs of repeated statement groups once, as a loop over a table of their
integers: the loop form must simulate exactly what the unrolled form does (outputs, every
KernelStats counter, the checks' reports), on the unrolled matrix-unit kernels it exists
for and on hand-made kernels that probe which names it may rename."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from sim_kernels import attention_graph, lowered_kernel

import hal.backends.cpu_sim.codegen as codegen
from hal.backends.cpu_sim import simulator
from hal.backends.cpu_sim.checks import SimulationError
from hal.devices.loader import load_spec
from hal.dtypes import cast, dtype, f32, i32
from hal.ir import GraphBuilder
from hal.kernel.ir import (
    THREAD_IDX,
    Binary,
    BufferParam,
    Const,
    Declare,
    If,
    Kernel,
    Load,
    Store,
    Var,
)
from hal.lowering.options import LoweringOptions

LOOP = re.compile(r"^\s*for _r\d+(, _r\d+)* in (_R\d+|range\(\d+\)):$", re.M)


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _matmul(dt: str, m: int, k: int, n: int, epilogue: bool = False):
    b = GraphBuilder("mm")
    d = dtype(dt)
    y = b.op("matmul", b.input("a", d, (m, k)), b.input("b", d, (k, n)))
    if epilogue:   # a fused epilogue: one group of statements per accumulator element
        bias = b.op("broadcast_to", b.input("bias", d, (n,)), shape=(m, n))
        y = b.op("gelu", b.op("add", y, bias))
    b.output(y)
    return b.build(), "matmul"


def _args(k: Kernel, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p.name: np.ascontiguousarray(cast(rng.standard_normal(p.numel), p.dtype)).reshape(-1)
            for p in k.params if isinstance(p, BufferParam)}


def _run(k, spec, roll: bool, monkeypatch, args=None, options=None):
    """(outputs, stats, source) of one simulation with the loop form on or off."""
    monkeypatch.setattr(codegen, "ROLL_RUNS", roll)
    simulator._CACHE.clear()
    args = {n: a.copy() for n, a in (args or _args(k, 0)).items()}
    try:
        st = simulator.simulate(k, args, spec, max_lanes=1 << 12, options=options)
        return args, st, simulator.compiled(k, options).source
    finally:
        simulator._CACHE.clear()


def _counters(st) -> dict:
    out = dataclasses.asdict(st)
    out.pop("wall_s")   # (time taken: the one field that may differ)
    return out


def _same(k, spec, monkeypatch, rolls: bool = True, **kw) -> tuple[dict, str]:
    new, st_new, src = _run(k, spec, True, monkeypatch, **kw)
    old, st_old, src_old = _run(k, spec, False, monkeypatch, **kw)
    assert not LOOP.search(src_old)
    if rolls:
        assert LOOP.search(src) and len(src) < len(src_old)
    for name in old:
        assert old[name].tobytes() == new[name].tobytes(), name
    assert _counters(st_new) == _counters(st_old)
    return new, src


CASES = [   # (device, kernel, its arguments, whether it has runs to roll)
    ("a100-sxm", _matmul, ("bf16", 96, 80, 72), True),                 # mma.sync
    ("a100-sxm", _matmul, ("f16", 64, 256, 40, True), True),
    ("h100-sxm", _matmul, ("bf16", 64, 128, 96, True), True),          # wgmma, TMA, roles
    ("h100-sxm", _matmul, ("f8e4m3fn", 64, 64, 64), True),
    ("mi300x", _matmul, ("bf16", 64, 96, 64, True), True),             # MFMA
    ("h100-sxm", attention_graph, ("bf16", (1, 2, 40, 64), (1, 2, 72, 64), True), False),
    ("a100-sxm", attention_graph, ("f16", (2, 1, 16, 32), (2, 1, 48, 32), False), False),
]


@pytest.mark.parametrize("device,build,args,rolls", CASES)
def test_the_loop_form_simulates_what_the_unrolled_form_does(device, build, args, rolls,
                                                             monkeypatch):
    k, spec = lowered_kernel(*build(*args), device)
    _same(k, spec, monkeypatch, rolls=rolls)


def test_a_planted_fault_reports_the_same_error(monkeypatch):
    """A check failing inside a rolled group names the same site (its number comes from
    the loop's table) and the same statement."""
    graph, kind = _matmul("bf16", 64, 256, 64)
    k, spec = lowered_kernel(graph, kind, "a100-sxm", LoweringOptions.planting("missing_cp_async_wait"))
    errors = []
    for roll in (True, False):
        with pytest.raises(SimulationError) as e:
            _run(k, spec, roll, monkeypatch)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


N = 8   # groups of the hand-made kernels below


def _groups(escape: bool, shared_name: bool) -> Kernel:
    """N groups `Declare t_g = tid * (g + 1); Store o[g * 64 + tid] = x[...] * t_g`; with
    `escape` the last group's variable is read after the run (it may not be renamed),
    with `shared_name` every group declares the same name (in a scope of its own)."""
    tid = Var("tid", i32)
    body = [Declare(tid, THREAD_IDX)]
    last = None
    for g in range(N):
        t = Var("t" if shared_name else f"t_{g}", i32)
        inner = [Declare(t, Binary("mul", tid, Const(g + 1, i32))),
                 Store("o", Binary("add", Const(g * 64, i32), tid),
                       Binary("mul", Load("x", Binary("add", Const(g * 64, i32), tid), f32),
                              Binary("add", Const(0.5, f32), Load("x", tid, f32))))]
        if shared_name:
            body.append(If(tid.lt(Const(64, i32)), inner))
        else:
            body.extend(inner)
        last = t
    if escape:
        body.append(Store("o", Binary("add", Const(N * 64, i32), tid),
                          Load("x", Binary("remainder", last, Const(64, i32)), f32)))
    n = (N + 1) * 64
    return Kernel("groups", [BufferParam("x", f32, (n,)),
                             BufferParam("o", f32, (n,), readonly=False)],
                  body, grid=(1, 1, 1), block=64)


@pytest.mark.parametrize("escape,shared_name", [(False, False), (True, False), (False, True)])
def test_hand_made_groups_roll_and_simulate_the_same(escape, shared_name, monkeypatch):
    k = _groups(escape, shared_name)
    spec = load_spec("a100-sxm")
    _, src = _same(k, spec, monkeypatch)
    if escape:   # the last group's variable is read later: its name survives
        name = simulator.compiled(k).var_names["t_7"]
        assert re.search(rf"^ *{name} = ", src, re.M)


def test_every_group_runs_once(monkeypatch):
    """Each group stores its own 64 elements: a loop that skipped or repeated a group
    would leave zeros or miss one (the unrolled form is the reference)."""
    k = _groups(False, False)
    out, _ = _same(k, load_spec("a100-sxm"), monkeypatch)
    x = _args(k, 0)["x"]
    o = out["o"].reshape(N + 1, 64)
    for g in range(N):
        want = (x[g * 64:(g + 1) * 64] * (np.float32(0.5) + x[:64])).astype(np.float32)
        assert o[g].tobytes() == want.tobytes(), g
