"""Reference-fed sampled kernels (sampled_children.py) and the reference's pauses inside a
node (hal.reference.evaluate_steps): later kernels read the reference's values of an
earlier group's outputs, never its simulated blocks; children run side by side and give
the serial run's bits; a failure is the serial run's."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from test_cpu_sim_parallel import _same_stats

from hal.backends.cpu_sim import backend as bk
from hal.backends.cpu_sim import sampled_children as sc
from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.reference_steps import ReferenceSteps
from hal.backends.cpu_sim.sampled import SampleOptions
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32
from hal.ir import GraphBuilder
from hal.lowering.options import LoweringOptions
from hal.reference import evaluate, evaluate_steps, random_inputs

SPEC = load_spec("h100-sxm")
HOW = SampleOptions(0.3, seed=2)


def _block():
    from hal.examples.build import make_llama_model

    return make_llama_model(1, 4 * 32, 64, heads=4, kv_heads=2, ffn=256)


def _two_matmuls(m: int = 300, k: int = 96, n: int = 200):
    """y1 = gelu(x @ w + b) (an epilogue) feeding y2 = y1 @ w2; both are outputs."""
    b = GraphBuilder("two")
    x = b.input("x", f32, (m, k))
    w = b.input("w", f32, (k, n))
    bias = b.input("b", f32, (n,))
    w2 = b.input("w2", f32, (n, 64))
    y1 = b.op("gelu", b.op("add", b.op("matmul", x, w), b.op("broadcast_to", bias, shape=[m, n])),
              approximate="tanh", name="y1")
    b.output(y1)
    b.output(b.op("matmul", y1, w2, name="y2"))
    return b.build()


def _same_runs(a, b) -> None:
    for k in a.outputs:
        assert a.outputs[k].tobytes() == b.outputs[k].tobytes(), k
    _same_stats(a.stats, b.stats)
    assert a.report == b.report


def test_later_kernels_read_the_reference_values_of_earlier_outputs(monkeypatch) -> None:
    """Every sampled kernel after the first reads, for each input an earlier sampled group
    made, exactly the reference's values: its simulated blocks are not in them."""
    g = _block()
    inputs = random_inputs(g, seed=0)
    given: dict[str, np.ndarray] = {}
    real_values_for = ReferenceSteps.values_for

    def values_for(self, group):
        got = real_values_for(self, group)
        given.update({n: a.copy() for n, a in got.items()})
        return got

    seen: list[tuple[str, str, np.ndarray]] = []
    real_run = bk.run_kernel_sampled

    def run(k, args, *a, **kw):
        for param, value in k.meta.buffers.items():
            if value in given and param in args:
                seen.append((k.name, value, np.array(args[param], copy=True)))
        return real_run(k, args, *a, **kw)

    monkeypatch.setattr(ReferenceSteps, "values_for", values_for)
    monkeypatch.setattr(bk, "run_kernel_sampled", run)
    res = CpuSimBackend().run_graph(g, inputs, SPEC, jobs=1, sample=HOW)
    assert res.report["ok"]
    assert len({k for k, _, _ in seen}) >= 3, [k for k, _, _ in seen]
    for kernel, value, arr in seen:
        assert arr.tobytes() == given[value].tobytes(), (kernel, value)


def test_a_wrong_kernel_is_flagged_alone_and_its_blocks_reach_the_outputs() -> None:
    """A planted wrong value in the first kernel's epilogue: its simulated elements fail
    parity and are what the run returns for them; the second kernel, fed the reference's
    y1, holds parity on its own simulated blocks. An exact run carries the fault on."""
    g = _two_matmuls()
    inputs = random_inputs(g, seed=0)
    faulty = LoweringOptions(faults=frozenset({"dropped_epilogue"}))
    be = CpuSimBackend()
    bad = be.run_graph(g, inputs, SPEC, jobs=1, lowering_options=faulty, sample=HOW)
    good = be.run_graph(g, inputs, SPEC, jobs=1, sample=HOW)
    reports = {k: r for k, r in bad.report["sampled"].items() if "parity_on_simulated" in r}
    (first,) = [r for r in reports.values() if "y1" in r["parity_on_simulated"]]
    (second,) = [r for r in reports.values() if "y2" in r["parity_on_simulated"]]
    assert not first["ok"] and second["ok"] and not bad.report["ok"]
    differ = bad.outputs["y1"] != good.outputs["y1"]
    assert differ.any() and first["parity_on_simulated"]["y1"]["elements"] >= differ.sum()
    # y2's simulated blocks read the reference's y1: the same bits as the clean run
    assert bad.outputs["y2"].tobytes() == good.outputs["y2"].tobytes()
    exact = be.run_graph(g, inputs, SPEC, lowering_options=faulty)
    assert not np.allclose(exact.outputs["y2"], evaluate(g, inputs)["y2"], rtol=1e-3)


def _slow_children(monkeypatch, seconds: float, only: str = ""):
    """Children that sleep before simulating (those whose kernel name starts with `only`),
    and a log of how many run at once."""
    from hal.backends.cpu_sim import parallel

    real_run = sc.run_kernel_sampled
    running = [0, 0]   # now, most; then the pids

    def slow(k, *a, **kw):
        if k.name.startswith(only):
            time.sleep(seconds)
        return real_run(k, *a, **kw)

    real_init, real_join = parallel.ChildRun.__init__, parallel.ChildRun.join

    def init(self, fn):
        real_init(self, fn)
        running[0] += 1
        running[1] = max(running[:2])
        running.append(self.pid)

    def join(self):
        try:
            return real_join(self)
        finally:
            running[0] -= 1

    monkeypatch.setattr(sc, "run_kernel_sampled", slow)   # (a child's: sampled_in_child)
    monkeypatch.setattr(parallel.ChildRun, "__init__", init)
    monkeypatch.setattr(parallel.ChildRun, "join", join)
    return running


def test_children_run_side_by_side_and_give_the_serial_bits(monkeypatch) -> None:
    g = _block()
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    serial = be.run_graph(g, inputs, SPEC, jobs=1, sample=HOW)
    running = _slow_children(monkeypatch, 0.3)
    seen: list[str] = []
    over = be.run_graph(g, inputs, SPEC, jobs=2, sample=HOW,
                        progress=lambda done, total, name: seen.append(name))
    assert running[:2] == [0, 2]   # two at once, never more (jobs=2), all joined
    _same_runs(serial, over)
    assert over.report["ok"]
    # the progress line says what the run still waits for after its last group
    assert seen[-1].startswith("sampled kernels (") and "still simulating" in seen[-1]


def test_a_failing_child_is_reported_as_the_serial_run_reports_it(monkeypatch) -> None:
    """The masked tail fault makes each unfused kernel of -exp(x * x) store out of
    bounds: in the overlapped run the second child fails first (the first sleeps) and is
    joined while the parent waits for a slot for the third; the run raises the first
    kernel's fault, as the serial run does, and leaves no child behind."""
    b = GraphBuilder("pw")
    x = b.input("x", f32, (100_000 + 17,))
    b.output(b.op("neg", b.op("exp", b.op("mul", x, x)), name="y"))
    g = b.build()
    inputs = random_inputs(g, seed=0)
    faulty = LoweringOptions(faults=frozenset({"off_by_one_mask"}))
    be = CpuSimBackend()
    with pytest.raises(SimulationError) as serial:
        be.run_graph(g, inputs, SPEC, jobs=1, lowering_options=faulty, sample=HOW,
                     fuse=False)
    first = serial.value.kernel
    running = _slow_children(monkeypatch, 0.5, only=first)
    with pytest.raises(SimulationError) as over:
        be.run_graph(g, inputs, SPEC, jobs=2, lowering_options=faulty, sample=HOW,
                     fuse=False)
    assert (over.value.kernel, over.value.kind, over.value.block) == \
        (serial.value.kernel, serial.value.kind, serial.value.block)
    for pid in running[2:]:   # each child ended and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _pauses(graph, inputs) -> tuple[int, dict]:
    steps = evaluate_steps(graph, inputs)
    empty = 0
    while True:
        try:
            names = next(steps)
        except StopIteration as done:
            return empty, done.value
        empty += names == []


def test_the_reference_pauses_between_panels_and_tiles(monkeypatch) -> None:
    """evaluate_steps yields (no constants) between the panels of a projection whose weight
    it keeps narrow and between attention's tiles, and gives the same values as without
    them."""
    import hal.reference_blocked as rb

    b = GraphBuilder("lin")
    x = b.input("x", bf16, (16, 64))
    w = b.input("w", bf16, (300, 64))
    b.output(b.op("linear", x, w, name="y"))
    lin = b.build()
    inputs = random_inputs(lin, seed=1)
    before, _ = _pauses(lin, inputs)
    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 5 * 64)   # 60 weight rows a panel: 5 panels
    paused, got = _pauses(lin, inputs)
    assert paused >= before + 4
    np.testing.assert_array_equal(got["y"], evaluate(lin, inputs)["y"])

    from hal.examples.build import make_llama_model

    attn = make_llama_model(1, 4 * 32, 128, heads=4, kv_heads=2, ffn=128)
    inputs = random_inputs(attn, seed=0)
    plain, want = _pauses(attn, inputs)
    monkeypatch.setattr(rb, "TILE_ELEMENTS", 512)   # blocked, one small tile a step
    monkeypatch.setattr(rb, "CAUSAL_ROWS", 16)
    tiled, got = _pauses(attn, inputs)
    assert tiled >= plain + 2 * 128 // 16   # (batch, kv head, 16 query rows) tiles
    for name in want:   # blocked attention gives the decomposition's values, bit for bit
        assert got[name].tobytes() == want[name].tobytes(), name


def test_without_the_reference_children_are_joined_in_turn_and_equal_serial(monkeypatch) -> None:
    """With the reference off every sampled group's values are functional: later kernels
    read its simulated blocks, so each child is joined before the next group starts (never
    two at once), and the bits, counters and reports are the serial run's."""
    g = _block()
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    serial = be.run_graph(g, inputs, SPEC, jobs=1, sample=HOW, compare_reference=False)
    running = _slow_children(monkeypatch, 0.1)
    over = be.run_graph(g, inputs, SPEC, jobs=2, sample=HOW, compare_reference=False)
    assert running[:2] == [0, 1] and len(running) > 4
    _same_runs(serial, over)
    assert {r["rest_from"] for r in over.report["sampled"].values() if "rest_from" in r} \
        == {"functional"}


def test_sampled_bits_do_not_depend_on_the_callers_blas_threads(monkeypatch) -> None:
    """The reference's float32 sums (a bf16 projection's panels) are the unsimulated
    blocks' values; OpenBLAS's sgemm sums differ in their last bits with its thread
    count, so a sampled run sums them on one BLAS thread whatever its caller set (and
    gives the caller's count back after)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from hal import reference_blocked as rb

    def blas_threads() -> int:
        return max((i.get("num_threads", 1) for i in threadpool_info()
                    if i.get("user_api") == "blas"), default=1)

    if blas_threads() < 2:
        pytest.skip("BLAS runs on one thread here: nothing to compare")
    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 1 << 16)  # w in two panels of 256 columns
    b = GraphBuilder("proj")
    x = b.input("x", bf16, (512, 256))
    w = b.input("w", bf16, (256, 512))
    b.output(b.op("dot_general", x, w, lhs_contracting=[1], rhs_contracting=[0], name="y"))
    g = b.build()
    inputs = random_inputs(g, seed=3)
    x32, w32 = inputs["x"].astype(np.float32), inputs["w"][:, :256].astype(np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        one = x32 @ w32
    with threadpool_limits(limits=2, user_api="blas"):
        two = x32 @ w32
    assert one.tobytes() != two.tobytes()   # the premise: a panel's sums differ on two
    seen: list[int] = []
    panels = rb._float32_panels

    def watched(a2, b2):
        seen.append(blas_threads())
        return (yield from panels(a2, b2))

    monkeypatch.setattr(rb, "_float32_panels", watched)
    be = CpuSimBackend()
    how = SampleOptions(0.02, seed=0)
    with threadpool_limits(limits=1, user_api="blas"):
        a = be.run_graph(g, inputs, SPEC, jobs=1, sample=how)
    with threadpool_limits(limits=2, user_api="blas"):
        c = be.run_graph(g, inputs, SPEC, jobs=1, sample=how)
        assert blas_threads() == 2   # the caller's count, back
    assert seen == [1, 1]   # the float32 panels ran, on one thread both times
    rep = a.report["sampled"]
    assert any(r.get("rest_from") == "reference" and r["blocks_simulated"] < r["blocks"]
               for r in rep.values()), rep   # some blocks hold the reference's values
    _same_runs(a, c)
