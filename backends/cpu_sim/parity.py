"""Tolerances and comparison of a backend's outputs against the float64 reference.

`tolerance_for(graph, value)` gives (rtol, atol) for one value from
hal.conformance.tolerance.rtol_atol (the conformance error model in its
value-free form; the conformance suite itself uses per-element bounds).
Integer and bool results are exact.

`compare(actual, expected, rtol, atol)` -> {"max_abs", "max_rel", "ok"}: ok when
|a - e| <= atol + rtol * |e| everywhere, NaN matches NaN, inf matches equal inf.
max_rel is the largest |a - e| / |e| where |e| >= atol: below that the absolute term
of the bound decides, and a relative error over a (near-)zero reference element would
read as 1e306 for a difference of one ulp.
"""

from __future__ import annotations

import math

import numpy as np

from hal.ir.graph import Graph, Value


def tolerance_for(graph: Graph, value: Value) -> tuple[float, float]:
    """(rtol, atol) for comparing `value` with the reference: the conformance error model."""
    from hal.conformance.tolerance import rtol_atol

    return rtol_atol(graph, value)


def compare(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict:
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        return {"max_abs": math.inf, "max_rel": math.inf, "ok": False,
                "error": f"shape {a.shape} != {e.shape}"}
    if a.dtype.kind in "biu" and e.dtype.kind in "biu" or a.dtype == np.bool_:
        diff = np.abs(a.astype(np.int64) - e.astype(np.int64)) if a.size else np.zeros(0)
        m = float(diff.max()) if diff.size else 0.0
        return {"max_abs": m, "max_rel": m, "ok": m == 0}
    a64, e64 = a.astype(np.float64, copy=False), e.astype(np.float64, copy=False)
    with np.errstate(all="ignore"):
        diff = np.abs(a64 - e64)
    if np.isfinite(e64).all() and not np.isnan(diff).any():
        return _compare_finite(diff, e64, rtol, atol)
    return _compare_general(a64, e64, rtol, atol)


def _compare_general(a64: np.ndarray, e64: np.ndarray, rtol: float, atol: float) -> dict:
    """`compare`'s rules for float64 values with any NaN or inf in them."""
    both_nan = np.isnan(a64) & np.isnan(e64)
    same_inf = np.isinf(e64) & (a64 == e64)
    with np.errstate(all="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(a64 - e64))
        diff = np.where(np.isnan(diff), np.inf, diff)
        mag = np.abs(e64)
        rel = np.where(mag >= max(atol, np.finfo(np.float64).tiny), diff / mag, 0.0)
        rel = np.where(np.isnan(rel), np.inf, rel)      # inf against an inf of either sign
        # a NaN or inf reference element allows no difference (NaN only matches NaN)
        bad = diff > atol + rtol * np.where(np.isfinite(e64), mag, 0.0)
    return {"max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float(rel.max()) if rel.size else 0.0,
            "ok": not bool(bad.any())}


def _compare_finite(diff: np.ndarray, e64: np.ndarray, rtol: float, atol: float) -> dict:
    """`compare` where every reference element is finite and no difference is NaN (the
    usual case: a model layer's outputs): no NaN or inf to match, so the general path's
    masks are all false and its results are these, in fewer passes."""
    mag = np.abs(e64)
    with np.errstate(all="ignore"):
        rel = np.divide(diff, mag, out=np.zeros_like(diff),
                        where=mag >= max(atol, np.finfo(np.float64).tiny))
        bad = diff > atol + rtol * mag
    return {"max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float(rel.max()) if rel.size else 0.0,
            "ok": not bool(bad.any())}
