"""The cheaper paths around a conformance case's simulated run give the same numbers:
bounds kept only where read, the NaN test folded into round_bound's min/max,
Comparison.to_dict without asdict, the suite's spec loaded once, cpu_sim without
per-kernel stats records."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from hal.conformance import runner
from hal.conformance.cases import get_case, make_inputs
from hal.conformance.compare import Comparison, check
from hal.conformance.direct_reference import check_direct, values_read
from hal.conformance.tolerance import graph_bounds, round_bound
from hal.dtypes import bf16, cast, f32
from hal.ir import GraphBuilder


def _same(a, b) -> bool:
    """Equal arrays bit for bit (NaNs too), shapes and dtypes included."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _same_bound(x, y) -> bool:
    return all(_same(getattr(x, f), getattr(y, f))
               for f in ("exact", "ref", "lo", "hi", "err", "free", "delta")) and \
        x.dtype == y.dtype and x.strict_zero == y.strict_zero


def _gqa_attention(dt="bf16"):
    b = GraphBuilder("t")
    q, k, v = (b.input(n, dt, s) for n, s in (("q", (2, 4, 5, 8)), ("k", (2, 2, 7, 8)),
                                              ("v", (2, 2, 7, 6))))
    b.output(b.op("scaled_dot_product_attention", q, k, v, causal=True))
    return b.build()


def _inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    return {v.name: cast(rng.standard_normal(tuple(v.shape)), v.dtype) for v in g.inputs}


def test_kept_bounds_equal_the_full_walk_and_the_rest_are_dropped():
    g = _gqa_attention()
    x = _inputs(g)
    prim, full = graph_bounds(g, x)
    keep = {p.name for p in prim.outputs} | values_read(g, prim)
    prim2, kept = graph_bounds(g, x, keep=lambda p: keep)
    assert set(kept) < set(full) and keep <= set(kept)
    assert len(kept) <= len(keep) + len(prim.inputs) + len(prim.constants)
    for name in kept:
        assert _same_bound(kept[name], full[name]), name


def test_values_read_holds_what_check_direct_reads():
    # the attention output is a reshape of the P @ V dot: check_direct reads that dot's
    # delta, so values_read must name it (a KeyError otherwise)
    g = _gqa_attention()
    x = _inputs(g)
    prim, full = graph_bounds(g, x)
    out = g.outputs[0].name
    read = values_read(g, prim)
    assert len(read - {out} - {v.name for v in g.inputs}) == 1   # the dot behind the reshape
    _, kept = graph_bounds(g, x, keep=lambda p: read | {q.name for q in p.outputs})
    device = {out: cast(full[out].ref, full[out].dtype)}
    a, b = check_direct(g, prim, full, device), check_direct(g, prim, kept, device)
    assert a.keys() == b.keys() == {out}
    assert a[out].to_dict() == b[out].to_dict() and a[out].checked > 0


def test_round_bound_treats_nan_deltas_as_unknown():
    rng = np.random.default_rng(1)
    exact = rng.standard_normal((6, 7))
    delta = np.abs(rng.standard_normal((6, 7))) * 1e-3
    delta[0, 0] = delta[3, 4] = np.nan
    delta[2, 2] = 0.0
    got = round_bound(exact, delta, bf16, False)
    want = round_bound(exact, np.where(np.isnan(delta), np.inf, delta), bf16, False)
    assert _same_bound(got, want)
    assert got.free[0, 0] and got.free[3, 4] and got.free.sum() == 2
    assert np.isinf(got.err[0, 0]) and got.err[2, 2] == 0


def test_round_bound_broadcasts_a_smaller_delta():
    exact = np.linspace(-2, 2, 12).reshape(3, 4)
    small = np.array([[1e-3, np.nan, 0.0, 2e-3]])
    got = round_bound(exact, small, f32, False)
    want = round_bound(exact, np.broadcast_to(np.where(np.isnan(small), np.inf, small),
                                              exact.shape).copy(), f32, False)
    assert _same_bound(got, want)
    assert got.free[:, 1].all() and not got.free[:, [0, 2, 3]].any()


def test_comparison_to_dict_is_asdict():
    b = round_bound(np.linspace(-1, 1, 40).reshape(5, 8), np.full((5, 8), 1e-3), f32, False)
    bad = np.asarray(cast(b.ref, f32)).copy()
    bad[2, 3] += 1.0
    c = check(bad, b)
    assert not c.ok and c.worst["index"] == [2, 3]
    d = c.to_dict()
    assert d == dataclasses.asdict(c)
    assert list(d) == [f.name for f in dataclasses.fields(Comparison)]
    assert d["worst"] is not c.worst and d["worst"]["index"] is not c.worst["index"]
    assert Comparison().to_dict() == dataclasses.asdict(Comparison())


def _strip(rec):
    return {k: v for k, v in rec.items() if k not in ("seconds", "cpu_seconds")}


def test_suite_spec_is_loaded_once_and_gives_the_same_record(monkeypatch):
    from hal.devices.loader import load_spec

    monkeypatch.setattr(runner, "_SUITE_SPECS", {})
    assert runner._suite_spec("h100-sxm") is runner._suite_spec("h100-sxm")
    assert runner._suite_spec("h100-sxm") == load_spec("h100-sxm")
    case = get_case("fused/layer_norm/f32/33x257")
    cfg = runner.SuiteConfig(device="h100-sxm", workers=1)
    assert _strip(runner._worker([case.id], cfg)[0]) == \
        _strip(runner.execute(case, "cpu_sim", "h100-sxm"))


def test_cpu_sim_without_kernel_stats_same_outputs():
    from hal.backends_registry import get_backend
    from hal.devices.loader import load_spec

    case = get_case("fused/softmax/f32/33x257")
    g = case.graph()
    x = make_inputs(g, case.dist, case.seed)
    be, spec = get_backend("cpu_sim"), load_spec("h100-sxm")
    full = be.run_graph(g, x, spec, compare_reference=False)
    bare = be.run_graph(g, x, spec, compare_reference=False, kernel_stats=False)
    assert full.stats and bare.stats == []
    assert full.outputs.keys() == bare.outputs.keys()
    for k in full.outputs:
        assert _same(full.outputs[k], bare.outputs[k])


def test_cpu_sim_without_kernel_stats_skips_the_roofline(monkeypatch):
    """kernel_stats=False: no kernel's stats are finished (stats.finish: the roofline);
    with stats every kernel's are."""
    from hal.backends.cpu_sim.stats import KernelStats
    from hal.backends_registry import get_backend
    from hal.devices.loader import load_spec

    finished = []
    real = KernelStats.finish
    monkeypatch.setattr(KernelStats, "finish",
                        lambda self, spec: finished.append(self.name) or real(self, spec))
    case = get_case("fused/softmax/f32/33x257")
    g = case.graph()
    x = make_inputs(g, case.dist, case.seed)
    be, spec = get_backend("cpu_sim"), load_spec("h100-sxm")
    be.run_graph(g, x, spec, compare_reference=False, kernel_stats=False)
    assert finished == []
    full = be.run_graph(g, x, spec, compare_reference=False)
    assert finished == [d["kernel"] for d in full.stats]
    assert all(d["modelled_time_s"] > 0 for d in full.stats)


def test_runner_asks_cpu_sim_for_no_stats(monkeypatch):
    from hal.backends_registry import get_backend

    be = get_backend("cpu_sim")
    seen = {}
    real = type(be).run_graph

    def spy(self, graph, inputs, spec=None, **kw):
        seen.update(kw)
        return real(self, graph, inputs, spec, **kw)

    monkeypatch.setattr(type(be), "run_graph", spy)
    monkeypatch.setattr(runner, "_PARAMS", {})
    monkeypatch.setattr(runner, "_run_graph_params", lambda b: frozenset(
        __import__("inspect").signature(real).parameters))
    case = get_case("elementwise/exp/f32/31")
    g = case.graph()
    runner._run_graph(be, g, make_inputs(g, case.dist, case.seed), "h100-sxm")
    assert seen.get("kernel_stats") is False


PRELOADED = ("hal.backends.cpu_sim.simulator", "hal.fusion.prepare", "hal.ops.decompose",
             "hal.lowering.kinds")


def test_preload_imports_what_a_case_imports_first():
    """In a fresh interpreter (this one has imported everything already): the modules are
    not loaded by importing the runner, and are after _preload."""
    probe = (f"import sys\nimport hal.conformance.runner as r\nmods = {PRELOADED!r}\n"
             "before = [m for m in mods if m in sys.modules]\n"
             "r._preload(r.SuiteConfig())\n"
             "print(before, [m for m in mods if m not in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] []", out


def _dist_by_masks(a, b):
    """_dist's definition, with whole-array masks."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        d = np.abs(a64 - b64)
        d = np.where((a64 == b64) | (np.isnan(a64) & np.isnan(b64)), 0.0, d)
    return np.where(np.isnan(d), np.inf, d)


@pytest.mark.parametrize("layout", ["flat", "broadcast", "scalar"])
def test_dist_fixes_only_the_nan_elements_as_the_masks_do(layout):
    from hal.conformance.tolerance import _dist

    vals = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan, 1e308, -1e308,
                     5e-324, 2.5])
    a, b = {"flat": (np.repeat(vals, vals.size), np.tile(vals, vals.size)),
            "broadcast": (vals[:, None], vals[None, :]),
            "scalar": (np.array(np.inf), vals)}[layout]
    got, want = _dist(a, b), _dist_by_masks(a, b)
    assert _same(got, want)
    assert _same(_dist(np.array(np.nan), np.array(np.nan)), np.array(0.0))


def test_a_suite_spec_that_does_not_load_is_each_cases_error(monkeypatch):
    monkeypatch.setattr(runner, "_SUITE_SPECS", {})
    assert runner._suite_spec("no-such-device") is None
    cfg = runner.SuiteConfig(device="no-such-device", workers=1)
    (rec,) = runner._worker(["elementwise/exp/f32/31"], cfg)
    assert rec["verdict"] == "error" and "no-such-device" in rec["reason"]
