"""Waves in forked workers (cpu_sim/parallel.py): the same outputs, counters and fault
reports as one process, whichever worker runs the faulty block."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.parallel import JOBS_ENV, WorkerLost, run_waves, sim_jobs
from hal.backends.cpu_sim.sampled import SampleOptions
from hal.backends.cpu_sim.simulator import MIN_WAVES, plan_waves, simulate, x_major_order
from hal.devices.loader import load_spec
from hal.dtypes import f32, i32
from hal.errors import HalError
from hal.ir import GraphBuilder
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    AtomicAdd,
    Barrier,
    Binary,
    BufferParam,
    Const,
    Declare,
    If,
    Kernel,
    Load,
    SharedBuffer,
    Store,
    Var,
)
from hal.reference import random_inputs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
SPEC = load_spec("h100-sxm")


def _exchange(nblocks: int, block: int, racy: frozenset[int]) -> Kernel:
    """out[b*T + t] = x[b*T + (t+1) % T] through shared memory; the blocks in `racy` skip
    the barrier between the store and the load (a race, in those blocks only)."""
    t = THREAD_IDX
    g = Var("g", i32)
    cond = Const(1, i32).eq(1)
    for b in sorted(racy):
        cond = cond.logical_and(Binary("ne", BLOCK_IDX_X, Const(b, BLOCK_IDX_X.dtype)))
    body = [Declare(g, BLOCK_IDX_X * block + t),
            Store("s", t, Load("x", g, f32)),
            If(cond, [Barrier()]),
            Store("out", g, Load("s", (t + 1) % block, f32))]
    return Kernel("exchange", [BufferParam("x", f32, (nblocks * block,)),
                               BufferParam("out", f32, (nblocks * block,), readonly=False)],
                  body, grid=(nblocks, 1, 1), block=block,
                  shared=[SharedBuffer("s", f32, block)])


def _run_exchange(racy: frozenset[int], jobs: int, nblocks: int = 64, block: int = 256):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(nblocks * block).astype(np.float32)
    out = np.zeros_like(x)
    st = simulate(_exchange(nblocks, block, racy), {"x": x, "out": out}, SPEC, jobs=jobs)
    return x, out, st


def _mlp(m: int, k: int, n: int):
    b = GraphBuilder("mlp")
    x = b.input("x", f32, (m, k))
    w = b.input("w", f32, (k, n))
    bias = b.input("b", f32, (n,))
    y = b.op("add", b.op("matmul", x, w), b.op("broadcast_to", bias, shape=[m, n]))
    b.output(b.op("gelu", y, approximate="tanh", name="y"))
    return b.build()


def _same_stats(a: list[dict], b: list[dict]) -> None:
    """Two runs' per-kernel stats equal apart from their timings."""
    drop = ("wall_s", "lower_s", "sim_cpu_s")
    assert [{k: v for k, v in s.items() if k not in drop} for s in a] == \
        [{k: v for k, v in s.items() if k not in drop} for s in b]


def test_wave_plan_is_fixed_and_at_least_min_waves() -> None:
    assert plan_waves(64, 256, 1 << 17) == [(0, 16), (16, 16), (32, 16), (48, 16)]
    assert plan_waves(10, 2048, 1 << 17) == [(0, 3), (3, 3), (6, 2), (8, 2)]
    assert plan_waves(2, 8192, 1 << 17) == [(0, 1), (1, 1)]
    assert plan_waves(64, 64, 1 << 17) == [(0, 64)]    # under SPLIT_LANES: one wave
    assert len(plan_waves(1000, 256, 256 * 100)) == 10 > MIN_WAVES
    assert sum(n for _, n in plan_waves(1001, 256, 256 * 100)) == 1001


@pytest.mark.parametrize("jobs", [2, 3])
def test_parallel_run_is_bitwise_equal_to_serial(jobs: int) -> None:
    x, o1, s1 = _run_exchange(frozenset(), 1)
    _, o2, s2 = _run_exchange(frozenset(), jobs)
    np.testing.assert_array_equal(o1, np.roll(x.reshape(64, 256), -1, axis=1).reshape(-1))
    assert o1.tobytes() == o2.tobytes()
    d1, d2 = s1.to_dict(), s2.to_dict()
    d1.pop("wall_s"), d2.pop("wall_s")
    assert d1 == d2 and s1.waves == MIN_WAVES


@pytest.mark.parametrize("racy,block", [({63}, (63, 0, 0)),        # only worker 1's wave 3
                                        ({20, 40}, (20, 0, 0)),   # waves 1 and 2: the first
                                        ({5, 63}, (5, 0, 0))])
def test_race_in_a_worker_block_is_reported_as_serial(racy, block) -> None:
    errs = []
    for jobs in (1, 2, 3):
        with pytest.raises(SimulationError) as ei:
            _run_exchange(frozenset(racy), jobs)
        errs.append(ei.value)
    for e in errs:
        assert e.kind == "race" and e.block == block and e.kernel == "exchange"
        assert str(e) == str(errs[0]) and e.thread == errs[0].thread and e.hint == errs[0].hint


def test_graph_outputs_counters_and_sampled_reports_equal_across_jobs() -> None:
    g = _mlp(2000, 64, 520)
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    r1 = be.run_graph(g, inputs, SPEC, jobs=1)
    r2 = be.run_graph(g, inputs, SPEC, jobs=2)
    assert all(s["waves"] >= MIN_WAVES for s in r1.stats)   # the workers had waves to share
    assert r1.outputs["y"].tobytes() == r2.outputs["y"].tobytes()
    _same_stats(r1.stats, r2.stats)
    assert r1.report == r2.report
    s1 = be.run_graph(g, inputs, SPEC, jobs=1, sample=SampleOptions(0.25, seed=3))
    s2 = be.run_graph(g, inputs, SPEC, jobs=2, sample=SampleOptions(0.25, seed=3))
    assert s1.outputs["y"].tobytes() == s2.outputs["y"].tobytes()
    _same_stats(s1.stats, s2.stats)
    assert s1.report == s2.report


def test_global_atomics_stay_serial_and_exact() -> None:
    n, block = 4096, 128
    i = Var("i", i32)
    k = Kernel("hist", [BufferParam("x", f32, (n,)), BufferParam("acc", f32, (4,), readonly=False)],
               [Declare(i, BLOCK_IDX_X * block + THREAD_IDX),
                AtomicAdd("acc", i % 4, Load("x", i, f32))],
               grid=(n // block, 1, 1), block=block)
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    outs = []
    for jobs in (1, 2):
        acc = np.zeros(4, np.float32)
        simulate(k, {"x": x, "acc": acc}, SPEC, jobs=jobs)
        outs.append(acc.tobytes())
    assert outs[0] == outs[1]


def _die_on_one(i: int) -> int:
    if i == 1:
        os._exit(3)
    return i


def test_run_waves_order_errors_and_lost_worker() -> None:
    done = []
    assert run_waves(7, lambda i: i * i, 3, done.append) == [i * i for i in range(7)]
    assert sorted(done) == list(range(7))

    def fail_at(i: int) -> int:
        if i in (2, 5):
            raise HalError(f"wave {i} failed", hint="h")
        return i

    with pytest.raises(HalError, match="wave 2 failed") as ei:
        run_waves(7, fail_at, 2)
    assert ei.value.hint == "h"
    with pytest.raises(WorkerLost, match="wave 1 of 4"):
        run_waves(4, _die_on_one, 2)


def test_sim_jobs_reads_flag_then_environment(monkeypatch) -> None:
    monkeypatch.setenv(JOBS_ENV, "3")
    assert sim_jobs() == 3 and sim_jobs(1) == 1
    monkeypatch.setenv(JOBS_ENV, "two")
    with pytest.raises(HalError, match=JOBS_ENV):
        sim_jobs()
    monkeypatch.delenv(JOBS_ENV)
    assert 1 <= sim_jobs() <= 8
    with pytest.raises(HalError, match="--jobs 0"):
        sim_jobs(0)


def test_waves_of_a_2d_grid_group_blocks_by_blockidx_x() -> None:
    """A causal attention launch in several waves: each wave holds blocks of one or a few
    row tiles (blockIdx.x), over every head, and the outputs and counters equal those of
    the same blocks run in linear order."""
    from test_cpu_sim_contract import SPEC, _args, _attention_kernel

    assert x_major_order((4, 1, 1)) is None
    assert x_major_order((3, 2, 1)).tolist() == [0, 3, 1, 4, 2, 5]
    kern = _attention_kernel(512, 32)
    assert kern.grid[0] > 1 and kern.grid[1] > 1
    a = _args(kern)
    b = {n: v.copy() for n, v in a.items()}
    s1 = simulate(kern, a, SPEC, jobs=1).to_dict()
    s2 = simulate(kern, b, SPEC, jobs=1, blocks=np.arange(kern.num_blocks)).to_dict()
    assert s1.pop("waves") > 1
    s2.pop("waves")
    s1.pop("wall_s"), s2.pop("wall_s")
    assert s1 == s2
    for n in a:
        np.testing.assert_allclose(a[n], b[n], rtol=0, atol=1e-6 * float(np.abs(b[n]).max()))
