"""Comparisons: a device's values against a Bound (reference) or against another device's.

`check(actual, bound)` -> Comparison: max abs and rel error against the
reference value, the ulp-distance distribution (p50 / p99 / max, in ulps of
the output dtype at the reference value), the bound (the largest deviation
the error model allows anywhere), `used` (the largest fraction of its own
allowance any element uses; hal.conformance.error_profile), the number of elements outside
[lo, hi], the worst element, and the verdict. NaN must meet NaN, an inf the
same inf (unless the interval reaches it: overflow of a near-max result),
and an exact op's zero the same sign of zero.

`diff(a, b, bound)` compares two devices (backend vs backend, fused vs
unfused): both may sit anywhere in [lo, hi], so they may differ by hi - lo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hal.dtypes import ulp
from hal.reference import widen

from .tolerance import Bound, _dist, _finite_abs


@dataclass
class Comparison:
    max_abs: float = 0.0
    max_rel: float = 0.0
    ulp_p50: float = 0.0
    ulp_p99: float = 0.0
    ulp_max: float = 0.0
    bound: float = 0.0
    used: float = 0.0     # max over checked elements of |error| / allowed error (<= 1: inside)
    bad: int = 0
    numel: int = 0
    worst: dict = field(default_factory=dict)
    ok: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        """asdict's dict (fields in order, `worst` and its lists copied), built directly:
        dataclasses.asdict's recursion cost ~70 us a comparison, several per case."""
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "ulp_p50": self.ulp_p50,
                "ulp_p99": self.ulp_p99, "ulp_max": self.ulp_max, "bound": self.bound,
                "used": self.used, "bad": self.bad, "numel": self.numel,
                "worst": {k: list(v) if isinstance(v, list) else v
                          for k, v in self.worst.items()},
                "ok": self.ok, "note": self.note}


_EXACT_SUMMARY = {"max_abs": 0.0, "max_rel": 0.0, "ulp_p50": 0.0, "ulp_p99": 0.0,
                  "ulp_max": 0.0}


def _summary(d: np.ndarray, ref: np.ndarray, dt) -> dict:
    if not d.size:
        return {}
    if not d.any():   # every element exact (d is a distance: +0, never -0): all 0.0
        return dict(_EXACT_SUMMARY)
    fin = np.isfinite(d)
    rel = d / np.maximum(_finite_abs(ref), 1e-300)
    rel = np.where(d == 0, 0.0, rel)
    units = d / ulp(np.nan_to_num(ref.astype(np.float64)), dt) if dt.is_float else d
    units = np.where(d == 0, 0.0, units)
    fu = units[fin] if fin.any() else np.zeros(1)
    p50, p99 = np.percentile(fu, [50, 99])   # one partition for both
    return {"max_abs": float(d.max()), "max_rel": float(rel.max()),
            "ulp_p50": float(p50), "ulp_p99": float(p99), "ulp_max": float(units.max())}


def check(actual: np.ndarray, b: Bound, signed_zero: bool = True) -> Comparison:
    """`actual` (declared dtype) against the reference interval of `b` (`signed_zero`:
    False only for the self-test's planted tolerance fault tol_no_signed_zero)."""
    a = np.asarray(actual)
    if tuple(a.shape) != tuple(b.ref.shape):
        return Comparison(ok=False, bad=-1, note=f"shape {list(a.shape)} != "
                                                    f"{list(b.ref.shape)}")
    dw = widen(a, b.dtype)
    ok = b.free.copy()
    with np.errstate(all="ignore"):
        if b.dtype.is_float:
            nan_r, nan_d = np.isnan(b.ref), np.isnan(dw)
            inside = (dw >= b.lo) & (dw <= b.hi)
            ok |= (nan_r & nan_d) | (~nan_r & ~nan_d & inside)
            if b.strict_zero and signed_zero:
                z = (b.ref == 0) & (dw == 0)
                ok &= ~z | (np.signbit(dw) == np.signbit(b.ref)) | b.free
        else:
            ok |= (dw >= b.lo) & (dw <= b.hi)
    d = np.where(b.free, 0.0, _dist(dw, b.ref))
    res = Comparison(numel=int(a.size), bound=b.max_bound, bad=int((~ok).sum()),
                     ok=bool(ok.all()), used=_used(d, b), **_summary(d, b.ref, b.dtype))
    if not res.ok:
        i = np.unravel_index(int(np.argmax(np.where(ok, -1.0, d))), a.shape) if a.ndim else ()
        res.worst = {"index": [int(x) for x in i], "actual": _num(dw[i]),
                     "reference": _num(b.ref[i]), "lo": _num(b.lo[i]), "hi": _num(b.hi[i])}
    return res


def _used(d: np.ndarray, b: Bound) -> float:
    """How much of the bound the device used: max |error| / allowed error over elements
    with a non-zero allowance (the bound / clean-error ratio is its inverse)."""
    if not d.any():   # exact everywhere: 0 / allowance is 0.0 wherever one is live
        return 0.0
    live = ~b.free & (b.err > 0) & np.isfinite(b.err) & np.isfinite(d)
    if not live.any():
        return 0.0
    return float((d[live] / b.err[live]).max())


def diff(a: np.ndarray, other: np.ndarray, b: Bound) -> Comparison:
    """Two devices' values: each may lie anywhere in [lo, hi], so |a - b| <= hi - lo."""
    aw, ow = widen(np.asarray(a), b.dtype), widen(np.asarray(other), b.dtype)
    if aw.shape != ow.shape:
        return Comparison(ok=False, bad=-1, note=f"shape {aw.shape} != {ow.shape}")
    d = _dist(aw, ow)
    with np.errstate(all="ignore"):
        width = np.where(b.hi == b.lo, 0.0, b.hi.astype(np.float64) - b.lo)
    width = np.where(np.isnan(width), np.inf, width)
    ok = b.free | (d <= width)
    res = Comparison(numel=int(aw.size), bad=int((~ok).sum()), ok=bool(ok.all()),
                     bound=float(width[~b.free].max()) if (~b.free).any() else 0.0,
                     **_summary(np.where(b.free, 0.0, d), b.ref, b.dtype))
    return res


def _num(x) -> float | int | bool | str:
    v = np.asarray(x).item()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v
