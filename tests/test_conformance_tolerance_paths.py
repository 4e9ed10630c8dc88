"""The error model's fast paths (hal.conformance.tolerance, hal.conformance.compare) give
the straightforward formulas' answers bit for bit, on the awkward values too: NaN, +-inf,
-0, zero deltas, 0-d arrays, integer and bool dtypes. The `_plain_*` functions below are
those formulas (the code before the fast paths), kept here as the oracle."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from bits_helper import same_bits

from hal.conformance import compare, tolerance
from hal.conformance.tolerance import Bound, ModelOptions, graph_bounds, round_bound
from hal.dtypes import DType, bf16, bool_, cast, f16, f32, f64, i32, ulp
from hal.ir import GraphBuilder
from hal.ops import get_op
from hal.reference import widen

AWKWARD = np.array([0.0, -0.0, 1.0, -1.5, np.nan, np.inf, -np.inf, 5e-324, -3e38, 6.5e4,
                    1e-40, 3.0e38, 2.0 ** -130, 65519.0, -65520.0, 7.0])


# ----------------------------------------------------------------------- the oracles

def _plain_finite_abs(a):
    return np.abs(np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0,
                                neginf=0.0))


def _plain_dist(a, b):
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        d = np.abs(a64 - b64)
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        d = np.where(same, 0.0, d)
    return np.where(np.isnan(d), np.inf, d)


def _plain_round_bound(exact, delta, dt: DType, strict, m=tolerance.DEFAULT_MODEL):
    exact = np.asarray(exact)
    ref = widen(cast(exact, dt), dt)
    if m.widen_ulps and dt.is_float:
        delta = delta + m.widen_ulps * ulp(np.nan_to_num(np.asarray(exact, np.float64)), dt)
    delta = np.broadcast_to(np.where(np.isnan(delta), np.inf, delta), ref.shape)
    free = np.isinf(delta)
    if not delta.any():
        return Bound(dt, exact, ref, ref, ref, np.zeros(ref.shape), free.copy(), strict,
                     np.zeros(ref.shape))
    with np.errstate(all="ignore"):
        if dt.is_bool:
            free = free | (delta > 0)
            lo = hi = ref
        else:
            ex = exact.astype(np.float64, copy=False)
            lo = widen(cast(ex - delta, dt), dt)
            hi = widen(cast(ex + delta, dt), dt)
            lo = np.where(delta == 0, ref, lo)
            hi = np.where(delta == 0, ref, hi)
        err = np.maximum(np.where(hi == ref, 0.0, hi.astype(np.float64, copy=False) - ref),
                         np.where(lo == ref, 0.0, ref - lo.astype(np.float64, copy=False)))
    nan_ref = np.isnan(ref) if dt.is_float else np.zeros(ref.shape, bool)
    err = np.where(nan_ref & ~free, 0.0, err)
    err = np.where(np.isnan(err) | free, np.inf, err)
    return Bound(dt, exact, ref, lo, hi, err, free, strict, np.asarray(delta, np.float64))


def _plain_summary(d, ref, dt):
    fin = np.isfinite(d)
    rel = d / np.maximum(np.abs(np.nan_to_num(ref.astype(np.float64), posinf=0, neginf=0)),
                         1e-300)
    rel = np.where(d == 0, 0.0, rel)
    units = d / ulp(np.nan_to_num(ref.astype(np.float64)), dt) if dt.is_float else d
    units = np.where(d == 0, 0.0, units)
    fu = units[fin] if fin.any() else np.zeros(1)
    return {"max_abs": float(d.max()), "max_rel": float(rel.max()),
            "ulp_p50": float(np.percentile(fu, 50)), "ulp_p99": float(np.percentile(fu, 99)),
            "ulp_max": float(units.max())}


def _plain_used(d, b):
    live = ~b.free & (b.err > 0) & np.isfinite(b.err) & np.isfinite(d)
    return float((d[live] / b.err[live]).max()) if live.any() else 0.0


# ----------------------------------------------------------------------- helpers

@pytest.mark.parametrize("a", [AWKWARD, AWKWARD[2:4], np.float64(np.inf), np.float64(-0.0),
                               np.arange(-3, 4), np.zeros((0, 3))])
def test_finite_abs_is_abs_of_nan_to_num(a):
    got = tolerance._finite_abs(a)
    assert same_bits(got, _plain_finite_abs(a))
    if np.ndim(a):
        assert not np.shares_memory(got, a)   # callers may change it


@pytest.mark.parametrize("a, b", [
    (AWKWARD, AWKWARD[::-1]), (AWKWARD, AWKWARD), (AWKWARD[2:4], -AWKWARD[2:4]),
    (np.float64(np.inf), np.float64(np.inf)), (np.float64(1.0), np.float64(-0.0)),
    (AWKWARD.reshape(4, 4), AWKWARD[:4]), (np.arange(5), np.arange(5)[::-1] * 0.5)])
def test_dist_is_the_masked_formula(a, b):
    assert same_bits(tolerance._dist(a, b), _plain_dist(a, b))


# ----------------------------------------------------------------------- round_bound

def _deltas(n):
    """Delta arrays that reach every branch: no zeros, some zeros, all zeros, -0, NaN,
    inf, a scalar to broadcast."""
    rng = np.random.default_rng(3)
    pos = rng.uniform(1e-6, 1e-2, n)
    some_zero = np.where(np.arange(n) % 2 == 1, 0.0, pos)   # AWKWARD's -0.0 is at 1
    with_nan = np.where(np.arange(n) % 5 == 1, np.nan, some_zero)
    with_inf = np.where(np.arange(n) % 4 == 2, np.inf, pos)
    return {"positive": pos, "some_zero": some_zero, "all_zero": np.zeros(n),
            "minus_zero": np.full(n, -0.0), "nan": with_nan, "inf": with_inf,
            "scalar": np.float64(1e-3), "huge": np.full(n, 1e300),
            # no rule makes a negative delta; the formula still defines the interval
            "negative": -pos, "tiny": np.resize([1e-320, -1e-320, 0.0], n)}


def _exacts(n):
    rng = np.random.default_rng(4)
    return {"awkward": np.resize(AWKWARD, n), "plain": rng.normal(size=n) * 100.0,
            "ints": np.round(rng.normal(size=n) * 10.0)}


@pytest.mark.parametrize("dt", [f32, bf16, f16, f64, i32, bool_], ids=lambda d: d.name)
@pytest.mark.parametrize("model", [ModelOptions(), ModelOptions(widen_ulps=1.0)],
                         ids=["default", "widened"])
def test_round_bound_matches_the_plain_formula(dt, model):
    n = len(AWKWARD)
    for ename, ex in _exacts(n).items():
        if dt.is_bool:
            ex = ex != 0
        for dname, delta in _deltas(n).items():
            got = round_bound(ex, delta, dt, True, model)
            want = _plain_round_bound(ex, delta, dt, True, model)
            for f in ("exact", "ref", "lo", "hi", "err", "free", "delta"):
                assert same_bits(getattr(got, f), getattr(want, f)), (ename, dname, f)


def test_round_bound_of_a_0d_value():
    for delta in (0.0, 1e-3, np.inf, np.nan):
        got = round_bound(np.float64(1.0 / 3.0), np.float64(delta), f32, False)
        want = _plain_round_bound(np.float64(1.0 / 3.0), np.float64(delta), f32, False)
        for f in ("ref", "lo", "hi", "err", "free"):
            assert same_bits(getattr(got, f), getattr(want, f)), (delta, f)


# ----------------------------------------------------------------------- rules

def _bound(ref, err, dt=f64, free=None):
    ref, err = np.asarray(ref, np.float64), np.asarray(err, np.float64)
    free = np.isinf(err) if free is None else np.asarray(free)
    return Bound(dt, ref, ref, ref, ref, err, free, False)


@pytest.mark.parametrize("dt", [f32, i32, bool_], ids=lambda d: d.name)
def test_perturbed_is_ref_plus_minus_err(dt):
    ref = widen(cast(np.resize(AWKWARD, 12) if not dt.is_bool else np.arange(12) % 2, dt), dt)
    err = np.resize([0.0, 0.5, np.inf, 2.0], 12)
    b = Bound(dt, ref, ref, ref, ref, err, np.isinf(err), False)
    for sign in (-1, 1):
        got = tolerance._perturbed(b, sign)
        if dt.is_bool:
            want = np.where(err > 0, ~ref, ref) if sign > 0 else ref
        else:
            with np.errstate(all="ignore"):
                want = ref.astype(np.float64) + sign * err
            want = want if dt.is_float else np.where(np.isfinite(want), want, 0).astype(np.int64)
        assert same_bits(got, want), sign


def _matmul(xs, attrs):
    """A matmul whose sums keep -0 (-0 + -0 = -0; BLAS starts from +0): the skip must
    give the same bits whatever the summation does with zero signs."""
    with np.errstate(all="ignore"):
        terms = xs[0][:, :, None] * xs[1][None, :, :]
        return [functools.reduce(np.add, (terms[:, k] for k in range(terms.shape[1])))]


@pytest.mark.parametrize("a_err, b_err", [
    ("zero", "noisy"), ("noisy", "zero"), ("zero", "inf"), ("inf", "zero"),
    ("noisy", "noisy"), ("minus_zero", "noisy"), ("noisy", "minus_zero"),
    ("zero", "minus_zero"), ("minus_zero", "zero")])
def test_contraction_skips_only_matmuls_that_are_exactly_zero(a_err, b_err):
    rng = np.random.default_rng(5)
    errs = {"zero": lambda s: np.zeros(s), "minus_zero": lambda s: np.full(s, -0.0),
            "noisy": lambda s: rng.uniform(0, 1e-3, s) * (rng.uniform(size=s) < 0.5),
            "inf": lambda s: np.where(rng.uniform(size=s) < 0.2, np.inf, 0.0)}
    a_ref = np.where(rng.uniform(size=(5, 7)) < 0.2, 0.0, rng.normal(size=(5, 7)))
    b_ref = rng.normal(size=(7, 3))
    a, b = _bound(a_ref, errs[a_err]((5, 7))), _bound(b_ref, errs[b_err]((7, 3)))
    aa, ab = tolerance._finite_abs(a.ref), tolerance._finite_abs(b.ref)
    with np.errstate(all="ignore"):
        got = tolerance._propagated_contraction(_matmul, {}, a, b, aa, ab)
        want = _matmul([aa, b.err], {})[0] + _matmul([a.err, ab], {})[0] \
            + _matmul([a.err, b.err], {})[0]
    assert same_bits(got, want)


@pytest.mark.parametrize("op", ["exp", "sigmoid", "neg"])
@pytest.mark.parametrize("dt", [f32, bf16], ids=lambda d: d.name)
def test_local_error_is_ulps_of_the_result_plus_a_subnormal_floor(op, dt):
    from hal.dtypes import compute_dtype

    g = _graph(lambda b: b.output(b.op(op, b.input("x", dt, (16,)))))
    node, exact = g.nodes[0], np.resize(AWKWARD, 16)
    model = get_op(op).error
    c = compute_dtype(dt)
    eps = 2 * c.unit_roundoff
    mag = _plain_finite_abs(exact)
    want = (model.ulps * eps + 0.5 * tolerance.U64) * mag + model.ulps * c.tiny * eps
    if model.zero_below_inverse_max:
        want = np.where(mag < 2.0 / c.max, np.maximum(want, mag), want)
    if not model.ulps:
        want = np.zeros(16)
    got = tolerance._local(node, exact, node.outputs[0], tolerance.DEFAULT_MODEL)
    assert same_bits(got, want)


def _graph(build):
    b = GraphBuilder("t")
    build(b)
    return b.build()


@pytest.mark.parametrize("op", ["add", "mul", "sub", "div", "maximum"])
def test_elementwise_propagation_takes_the_worst_corner(op):
    """Both inputs carry errors (they come out of exp): the propagated error is the
    largest distance from the exact result over the four corners (x +- ex, y +- ey)."""
    def build(b):
        x, y = b.op("exp", b.input("x", f32, (64,))), b.op("exp", b.input("y", f32, (64,)))
        b.output(b.op(op, x, y))
    g = _graph(build)
    rng = np.random.default_rng(6)
    ins = {"x": cast(rng.normal(size=64), f32), "y": cast(rng.normal(size=64), f32)}
    prim, bounds = graph_bounds(g, ins)
    node = prim.nodes[-1]
    bx, by = (bounds[v.name] for v in node.inputs)
    out = bounds[node.outputs[0].name]
    fn = {"add": np.add, "mul": np.multiply, "sub": np.subtract, "div": np.divide,
          "maximum": np.maximum}[op]
    worst = np.zeros(64)
    for sx in (-1, 1):
        for sy in (-1, 1):
            worst = np.maximum(worst, np.abs(fn(bx.ref + sx * bx.err, by.ref + sy * by.err)
                                             - out.exact))
    assert bx.err.any() and by.err.any()
    local = tolerance._local(node, out.exact, node.outputs[0], tolerance.DEFAULT_MODEL)
    assert same_bits(out.delta, local + worst)


def test_an_unknown_input_makes_the_elementwise_result_unknown():
    g = _graph(lambda b: b.output(b.op("add", b.input("x", f32, (4,)), b.input("y", f32, (4,)))))
    node = g.nodes[0]
    attrs = get_op("add").check_attrs(node.attrs)
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    # free marks the unknown elements (their error is inf in a real Bound, not here, so
    # that the rule's own marking is what is tested)
    x = _bound(ref, [0.0, 1.0, 0.5, 0.0], f32, free=[False, True, False, False])
    y = _bound(ref, [1.0, 0.0, 0.0, 0.0], f32, free=[True, False, False, False])
    for ins, unknown in (([x, y], [True, True, False, False]), ([x, x], [False, True, False, False]),
                         ([y, _bound(ref, [0.0, 0.0, 0.25, 0.0], f32)], [True, False, False, False])):
        (delta,) = tolerance._elementwise(node, attrs, ins, [ref + ref], tolerance.DEFAULT_MODEL)
        assert np.isinf(delta).tolist() == unknown


# ----------------------------------------------------------------------- compare

@pytest.mark.parametrize("dt", [f32, bf16, i32], ids=lambda d: d.name)
def test_summary_and_used_match_the_plain_formulas(dt):
    rng = np.random.default_rng(7)
    ref = widen(cast(rng.normal(size=200) * 10, dt), dt)
    err = np.abs(rng.normal(size=200)) * 1e-2
    b = Bound(dt, ref, ref, ref, ref, err, np.zeros(200, bool), False)
    for d in (np.zeros(200), np.abs(rng.normal(size=200)) * 1e-3,
              np.where(np.arange(200) % 7 == 0, np.inf, 0.0), np.zeros(0)):
        r = ref[:d.size]
        got = compare._summary(d, r, dt)
        assert repr(got) == repr(_plain_summary(d, r, dt) if d.size else {})   # -0.0 too
        if d.size:
            assert repr(compare._used(d, b)) == repr(_plain_used(d, b))


def test_an_exact_device_gets_zero_statistics():
    g = _graph(lambda b: b.output(b.op("exp", b.input("x", f32, (32,)))))
    prim, bounds = graph_bounds(g, {"x": cast(np.linspace(-3, 3, 32), f32)})
    b = bounds[prim.outputs[0].name]
    c = compare.check(cast(b.ref, f32), b)
    assert c.ok and (c.max_abs, c.max_rel, c.ulp_p50, c.ulp_p99, c.ulp_max, c.used) == (0,) * 6
    off = cast(b.ref, f32).copy()
    off[3] = np.nextafter(off[3], np.float32(np.inf))
    c = compare.check(off, b)
    assert c.max_abs > 0 and c.ulp_max == 1.0 and 0 < c.used <= 1


def test_graph_bounds_runs_on_one_blas_thread_and_restores_the_callers(monkeypatch):
    from threadpoolctl import threadpool_info

    def blas_threads():   # NumPy's BLAS (another loaded later is not limited)
        return [i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas" and "numpy" in i["filepath"]]

    before, seen = blas_threads(), []
    inner = tolerance._graph_bounds

    def spy(*args):
        seen.append(blas_threads())
        return inner(*args)

    monkeypatch.setattr(tolerance, "_graph_bounds", spy)
    g = _graph(lambda b: b.output(b.op("exp", b.input("x", f32, (4,)))))
    graph_bounds(g, {"x": cast(np.zeros(4), f32)})
    assert before and seen == [[1] * len(before)] and blas_threads() == before
