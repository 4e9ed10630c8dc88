"""Loops of independent iterations run as one wide pass (backends/cpu_sim/widen.py): same
bits, counters and fault reports as the plain loop, and only where that is sound."""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_sim_faults import H100, MI300X

from hal.backends.cpu_sim import simulator, widen
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.simulator import simulate
from hal.dtypes import f32, i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    Assign,
    Barrier,
    BufferParam,
    Const,
    Declare,
    For,
    If,
    Kernel,
    Load,
    SharedBuffer,
    Shuffle,
    Store,
    Var,
)

T, ITERS, ROWS = 64, 32, 16


def _c(v: int):
    return Const(v, i32)


def fill_then_sum(*, n_in: int = 2 * ITERS * T, shared_stride: int = T,
                  rows_per_thread: int = ITERS, warp: int = 32) -> Kernel:
    """Each block fills a shared tile in a widenable loop (load, scale by a row statistic
    computed with shuffles in another widenable loop, store), then sums it per thread."""
    i, e, x, st, acc, j = (Var(n, t) for n, t in (("i", i32), ("e", i32), ("x", f32),
                                                     ("st", f32), ("acc", f32), ("j", i32)))
    r, s, w = Var("r", i32), Var("s", f32), Var("w", f32)
    base = BLOCK_IDX_X * (ITERS * T)
    stats = For(r, _c(0), _c(ROWS), _c(1), [            # a statistic per row, shuffled
        Declare(s, Load("x", base + r * T + THREAD_IDX, f32)),
        Assign(s, s + Shuffle(s, "xor", _c(1), 32)),
        If(THREAD_IDX.eq(0), [Store("stat", r, s)]),
    ])
    fill = For(i, _c(0), _c(rows_per_thread), _c(1), [
        Declare(e, i * T + THREAD_IDX),
        Declare(x, Load("x", base + e, f32, mask=e.lt(n_in), other=Const(0.0, f32))),
        Declare(w, Load("stat", i % ROWS, f32)),
        If(x.lt(Const(0.0, f32)), [Assign(x, x * w)]),
        Store("tile", i * shared_stride + THREAD_IDX, x * Const(0.5, f32)),
    ])
    body = [stats, Barrier(), fill, Barrier(), Declare(acc, Const(0.0, f32)),
            For(j, _c(0), _c(ITERS), _c(1),
                [Assign(acc, acc + Load("tile", j * T + THREAD_IDX, f32))]),
            Store("out", BLOCK_IDX_X * T + THREAD_IDX, acc)]
    return Kernel("fill_then_sum", [BufferParam("x", f32, (n_in,)),
                                    BufferParam("out", f32, (2 * T,), readonly=False)],
                  body, grid=(2, 1, 1), block=T,
                  shared=[SharedBuffer("tile", f32, ITERS * T), SharedBuffer("stat", f32, ROWS)],
                  warp_size=warp)


def _run(k: Kernel, spec, *, on: bool, x: np.ndarray | None = None):
    widen.ENABLED = on
    simulator._CACHE.clear()
    try:
        xs = np.random.default_rng(1).standard_normal(k.params[0].numel).astype(np.float32) \
            if x is None else x
        out = np.zeros(2 * T, np.float32)
        st = simulate(k, {"x": xs, "out": out}, spec, jobs=1)
        return out, st.to_dict()
    finally:
        widen.ENABLED = True
        simulator._CACHE.clear()


@pytest.mark.parametrize("spec", [H100, MI300X], ids=["w32", "w64"])
def test_wide_pass_equals_plain_loop(spec, monkeypatch) -> None:
    k = fill_then_sum(warp=spec.warp_size)
    calls = []
    real = widen.view
    monkeypatch.setattr(widen, "view", lambda W, n: calls.append(n) or real(W, n))
    plain_out, plain_stats = _run(k, spec, on=False)
    assert calls == []
    wide_out, wide_stats = _run(k, spec, on=True)
    assert sorted(set(calls)) == [ROWS, ITERS]   # both loops ran wide, the reduction did not
    assert wide_out.tobytes() == plain_out.tobytes()
    plain_stats.pop("wall_s", None)
    wide_stats.pop("wall_s", None)
    assert wide_stats == plain_stats


def _error(k: Kernel, on: bool) -> SimulationError:
    with pytest.raises(SimulationError) as e:
        _run(k, H100, on=on)
    return e.value


def test_out_of_bounds_in_a_later_iteration_reports_as_the_plain_loop() -> None:
    # x is too short: iteration 5 (e = 5*64 + tid) of block 1 reads past it
    k = fill_then_sum(n_in=ITERS * T + 5 * T + 3)
    plain, wide = _error(k, False), _error(k, True)
    assert plain.kind == "out_of_bounds"
    assert (wide.kind, wide.block, wide.thread, wide.index, str(wide)) == \
        (plain.kind, plain.block, plain.thread, plain.index, str(plain))


def test_race_between_iterations_reports_as_the_plain_loop() -> None:
    # stride 32 < 64 threads: thread t+32 of iteration i writes the word thread t writes
    # in iteration i+1 (a race the wide pass meets in another order)
    k = fill_then_sum(shared_stride=32)
    plain, wide = _error(k, False), _error(k, True)
    assert plain.kind == "race"
    assert (wide.kind, wide.block, wide.thread, wide.index, str(wide)) == \
        (plain.kind, plain.block, plain.thread, plain.index, str(plain))


def _loop(body, stop: int = 32) -> For:
    return For(Var("i", i32), _c(0), _c(stop), _c(1), body)


@pytest.mark.parametrize("case", ["carried", "load_and_store", "used_after", "barrier",
                                  "short", "local"])
def test_loops_that_are_not_widened(case) -> None:
    i, acc = Var("i", i32), Var("acc", f32)
    gs, loc = {"x", "s"}, {"L"}
    store_s = Store("s", i * T + THREAD_IDX, Load("x", i * T + THREAD_IDX, f32))
    loops = {
        "carried": _loop([Assign(acc, acc + Load("x", i, f32))]),
        "load_and_store": _loop([Store("s", i * T + THREAD_IDX,
                                       Load("s", (i + 1) * T + THREAD_IDX, f32))]),
        "used_after": _loop([store_s]),
        "barrier": _loop([store_s, Barrier()]),
        "short": _loop([store_s], stop=widen.MIN_TRIPS - 1),
        "local": _loop([Store("L", i, Load("x", i, f32))]),
    }
    s = loops[case]
    after = [Store("x", THREAD_IDX, Const(0.0, f32), mask=i.lt(3))] if case == "used_after" \
        else []
    assert widen.widenable(s, [Declare(acc, Const(0.0, f32)), s, *after], gs, loc) is None
    assert widen.widenable(_loop([store_s]), [_loop([store_s])], gs, loc) == ("s",)


def test_every_scalar_counter_of_a_wave_is_folded_back() -> None:
    """A new scalar counter on Wave must be added to widen.COUNTERS, or a wide pass
    would drop what it counted."""
    from hal.backends.cpu_sim.lanes import Wave

    w = Wave("k", (1, 1, 1), 32, 0, 1, 32, [], [], [], [], 0, True)
    structural = {"T", "B", "L", "block0", "warp_size", "nparts", "epoch", "check", "fast",
                  "name"}
    ints = {n for n, v in vars(w).items() if isinstance(v, int) and not isinstance(v, bool)}
    assert ints - structural == set(widen.COUNTERS)
