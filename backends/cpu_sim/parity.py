"""Tolerances and comparison of a backend's outputs against the float64 reference.

`tolerance_for(graph, value)` gives (rtol, atol) for one value from
hal.conformance.tolerance.rtol_atol (the conformance error model in its
value-free form; the conformance suite itself uses per-element bounds).
The rule it replaced, `legacy_tolerance_for`, derived them from the error
models of the ops that produce it (DESIGN.md decision 8): the unit roundoff u
of the compute dtype (f32 for 16-bit/fp8 values) times the summed per-op ulps
along the value's producer chain, plus the accumulation length of every
reduction/contraction/scan on the chain, plus half an ulp for each rounding to
a narrow storage dtype on the chain; times a safety factor of 4. atol equals
rtol (inputs are O(1): reference random inputs are N(0, 1)); the conformance
milestone refines this with magnitudes. Integer and bool results are exact.

`compare(actual, expected, rtol, atol)` -> {"max_abs", "max_rel", "ok"}: ok when
|a - e| <= atol + rtol * |e| everywhere, NaN matches NaN, inf matches equal inf.
"""

from __future__ import annotations

import math

import numpy as np

from hal.dtypes import compute_dtype
from hal.ir.graph import Graph, Value
from hal.ops import get_op

SAFETY = 4.0


def _accumulation_length(node) -> int:
    op = get_op(node.op)
    if not op.error.accumulates:
        return 0
    x = node.inputs[0]
    if "axes" in node.attrs or "axis" in node.attrs and node.op == "cumsum":
        out_numel = math.prod(node.outputs[0].shape) or 1
        return max(1, math.prod(x.shape) // out_numel) if node.op != "cumsum" \
            else x.shape[node.attrs["axis"]]
    # contractions: the input elements per output element along the contracted dims
    a, b = node.inputs
    out_numel = math.prod(node.outputs[0].shape) or 1
    return max(1, int(round(math.sqrt(math.prod(a.shape) * math.prod(b.shape) / out_numel))))


def tolerance_for(graph: Graph, value: Value) -> tuple[float, float]:
    """(rtol, atol) for comparing `value` with the reference: the conformance error model."""
    from hal.conformance.tolerance import rtol_atol

    return rtol_atol(graph, value)


def legacy_tolerance_for(graph: Graph, value: Value) -> tuple[float, float]:
    """The first rough rule (kept for comparison; tolerance_for replaces it)."""
    if not value.dtype.is_float:
        return 0.0, 0.0
    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    seen: set[str] = set()
    stack = [value]
    units = 0.0      # in units of u(compute dtype)
    storage = 0.0    # absolute relative error from storage roundings
    while stack:
        v = stack.pop()
        if v.name in seen:
            continue
        seen.add(v.name)
        n = producer.get(v.name)
        if n is None:
            continue
        op = get_op(n.op)
        units += op.error.ulps + _accumulation_length(n)
        if v.dtype.is_float and compute_dtype(v.dtype) != v.dtype:
            storage += v.dtype.unit_roundoff
        stack.extend(n.inputs)
    u = compute_dtype(value.dtype).unit_roundoff
    rtol = SAFETY * (units * u + storage + value.dtype.unit_roundoff)
    return rtol, rtol


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
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(e64)
    same_inf = np.isinf(e64) & (a64 == e64)
    with np.errstate(all="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(a64 - e64))
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = diff / np.maximum(np.abs(e64), np.finfo(np.float64).tiny)
        bad = diff > atol + rtol * np.abs(np.where(np.isinf(e64), 0, e64))
    return {"max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float(rel.max()) if rel.size else 0.0,
            "ok": not bool(bad.any())}
