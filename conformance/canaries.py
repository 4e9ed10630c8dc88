"""Canary cases: outputs built to fail just outside the correct bound (issue 21).

A loosened tolerance changes no verdict of an ordinary case: correct kernels
pass either way. A canary case runs its graph on the backend like any other
case, checks the clean output (it must pass), then applies a DEFECT to the
output, sized from a statement of the op's error written HERE (the op
registry's ulps, the Higham-Mary accumulation bound, round-to-nearest), not
from hal.conformance.tolerance's code. The error model must reject the
defective output; a canary passes when it does. A bound made 16x looser, an
accumulation term 16x larger, a dropped signed-zero check or a store rounding
widened by an ulp accepts the defect and fails the canary.

Defects:
* `ulps`: every element moved away from the exact value by 2 * ulps + 2 ulps
  of f32 (the op's registered ulps; the model's one-ulp-relative eps is at
  most two ulps of spacing), just outside the op's own allowance;
* `accumulation`: a sum moved by twice (5 sqrt(n) + log2 n) u sum|x| plus one
  ulp, just outside the accumulation allowance (f32 accumulators);
* `signed_zero`: zeros of an exact op's result with the other sign;
* `truncation`: a correctly rounded store replaced by the value rounded toward
  zero (where that differs): an exact op's result admits nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from hal.dtypes import DTYPES, cast, ulp
from hal.reference import widen

HM_LAMBDA = 5.0   # Higham & Mary (2019): lambda sqrt(n) u sum|x|, plus log2(n) for a tree


@dataclass(frozen=True)
class Defect:
    description: str
    apply: Callable[..., np.ndarray]   # (case, actual (wide), bound, inputs) -> defective


DEFECTS: dict[str, Defect] = {}


def register_defect(name: str, description: str):
    """Register a canary defect (the extension point for new tolerance canaries)."""
    def deco(fn):
        DEFECTS[name] = Defect(description, fn)
        return fn

    return deco


def _away(actual: np.ndarray, exact: np.ndarray, step: np.ndarray) -> np.ndarray:
    """actual moved by `step` away from the exact value (upward where equal)."""
    sign = np.where(actual < exact, -1.0, 1.0)
    return actual + sign * step


@register_defect("ulps", "each element 2 * ulps + 2 ulps of f32 away from the exact value")
def _ulps(case, actual, b, inputs):
    from hal.ops import get_op

    n_ulps = float(get_op(case.op).error.ulps)
    step = (2.0 * n_ulps + 2.0) * ulp(np.nan_to_num(b.exact.astype(np.float64)), DTYPES["f32"])
    return _away(actual, b.exact.astype(np.float64), step)


def _magnitude_and_length(case, inputs) -> tuple[np.ndarray, int]:
    if case.op == "matmul":
        a, w = (np.abs(inputs[k].astype(np.float64)) for k in ("a", "b"))
        return a @ w, a.shape[-1]
    x = np.abs(inputs["x"].astype(np.float64))
    if case.op == "cumsum":
        return np.cumsum(x, axis=1), x.shape[1]
    return x.sum(axis=1), x.shape[1]


@register_defect("accumulation", "a sum moved by twice (5 sqrt(n) + log2 n) u sum|x| plus an ulp")
def _accumulation(case, actual, b, inputs):
    mag, n = _magnitude_and_length(case, inputs)
    u = 2.0 ** -24
    step = 2.0 * (HM_LAMBDA * math.sqrt(n) + math.log2(n)) * u * mag
    step = step + ulp(np.nan_to_num(b.exact.astype(np.float64)), DTYPES["f32"])
    return _away(actual, b.exact.astype(np.float64), step)


@register_defect("signed_zero", "zeros of an exact result with the other sign")
def _signed_zero(case, actual, b, inputs):
    zero = (b.ref == 0) & (actual == 0)
    return np.where(zero, np.where(np.signbit(actual), 0.0, -0.0), actual)


@register_defect("truncation", "an exact store rounded toward zero instead of to nearest")
def _truncation(case, actual, b, inputs):
    exact = b.exact.astype(np.float64)
    rne = widen(cast(exact, b.dtype), b.dtype).astype(np.float64)
    # the neighbour of the nearest value on the side of zero, where exact lies beyond it
    toward = np.nextafter(rne.astype(b.dtype.np_dtype), np.zeros((), b.dtype.np_dtype)) \
        if b.dtype.name in ("f32", "f16", "f64") else None
    if toward is None:   # bf16 / fp8: step by the spacing just below |rne| (binade edges)
        step = ulp(np.abs(rne) * (1.0 - 2.0 ** -12), b.dtype)
        toward = rne - np.sign(rne) * step
    toward = np.asarray(toward, dtype=np.float64)
    rtz = np.where(np.abs(rne) > np.abs(exact), toward, rne)
    return np.where(np.isfinite(exact) & (rtz != rne), rtz, actual)


def judge_canary(case, outputs: Mapping[str, np.ndarray], bounds: Mapping, clean_ok: bool,
                 inputs: Mapping[str, np.ndarray] | None = None,
                 signed_zero: bool = True) -> tuple[str, str]:
    """(raw verdict, reason) of a canary case: pass when the defect is rejected
    (`signed_zero`: the comparison's, see compare.check)."""
    from .compare import check

    if not clean_ok:
        return "fail", "the clean output is already outside the bound (canary not judged)"
    d = DEFECTS[case.defect]
    rejected, changed = [], 0
    for k, b in bounds.items():
        actual = widen(np.asarray(outputs[k]), b.dtype).astype(np.float64)
        with np.errstate(all="ignore"):
            bad = d.apply(case, actual, b, inputs or {})
        changed += int(np.sum(~((bad == actual) & (np.signbit(bad) == np.signbit(actual)))
                              & ~np.isnan(actual)))
        if not check(cast(bad, b.dtype), b, signed_zero).ok:
            rejected.append(k)
    if not changed:
        return "error", f"the {case.defect} defect changes no element of this case"
    if rejected:
        return "pass", ""
    return "fail", (f"the error model accepted {d.description} ({changed} elements), a "
                    f"defect built to lie just outside the correct bound")


# --------------------------------------------------------------------------- cases

CANARIES = (  # (defect, op, dtypes, shape, dist, builder)
    *[("ulps", op, ("f32",), (33, 257), dist) for op, dist in (
        ("exp", "normal"), ("tanh", "normal"), ("sin", "normal"), ("log", "positive"),
        ("rsqrt", "positive"), ("sigmoid", "normal"), ("erf", "normal"))],
    ("accumulation", "reduce_sum", ("f32",), (4, 4096), "positive"),
    ("accumulation", "reduce_sum", ("f32",), (33, 257), "positive"),
    ("accumulation", "cumsum", ("f32",), (4, 1025), "positive"),
    ("accumulation", "matmul", ("f32",), (17, 1025, 9), "positive"),
    ("signed_zero", "neg", ("f32",), (16, 33), "special"),
    ("signed_zero", "neg", ("bf16",), (16, 33), "special"),
    ("signed_zero", "abs", ("f16",), (16, 33), "special"),
    ("signed_zero", "maximum", ("f32",), (16, 33), "special"),
    ("truncation", "cast", ("f32", "bf16"), (33, 257), "normal"),
    ("truncation", "cast", ("f32", "f16"), (33, 257), "normal"),
    ("truncation", "cast", ("f64", "f32"), (33, 257), "normal"),
    ("truncation", "cast", ("f32", "f8e4m3fn"), (33, 257), "normal"),
)


def _build(op, dtypes, shape):
    def build(b):
        dt = dtypes[0]
        if op == "matmul":
            m, k, n = shape
            b.output(b.op("matmul", b.input("a", dt, (m, k)), b.input("b", dt, (k, n))))
        elif op == "cast":
            b.output(b.op("cast", b.input("x", dt, shape), dtype=dtypes[1]))
        elif op == "reduce_sum":
            b.output(b.op("reduce_sum", b.input("x", dt, shape), axes=(1,)))
        elif op == "cumsum":
            b.output(b.op("cumsum", b.input("x", dt, shape), axis=1))
        elif op == "maximum":
            b.output(b.op("maximum", b.input("x", dt, shape), b.input("y", dt, shape)))
        else:
            b.output(b.op(op, b.input("x", dt, shape)))

    return build


def canary_cases(c) -> None:
    """Add the canary cases to a cases._Collector (family `canary/<defect>`)."""
    for defect, op, dtypes, shape, dist in CANARIES:
        c.add("canary", op, dtypes, "x".join(map(str, shape)), _build(op, dtypes, shape),
              dist=dist, family=f"canary/{defect}", defect=defect)
