"""The simulator's value representation and the conversions and integer arithmetic the
generated code calls on it.

Every per-thread value is a NumPy array over the wave's lanes or, when the generated
code knows it is the same for every lane, a NumPy or Python scalar (`ndim` 0). Floats
narrower than f32 are held in float32 arrays whose values are exactly representable in
their dtype; all integers are held in int64 (i32 results are checked for overflow, then
wrapped: `I32_MIN`, `I32_MAX`); bools in bool_. Here: the representation dtype
(`rep_dtype`), rounding to a dtype (`to_rep`, `fast_to_rep`), the cast of a stored value
to its buffer's dtype (`store_cast`), and C division and remainder by a constant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hal.dtypes import DType, bf16, cast

from .scans import int_min

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
REM_BY_DIVISION_MIN = 2048      # lanes from which rem_by_const divides instead of using %


def ndim(x: Any) -> int:
    """0 for a scalar (a value uniform over the lanes), else the array's ndim."""
    return x.ndim if isinstance(x, np.ndarray) else 0


def rep_dtype(dt: DType) -> np.dtype:
    """The NumPy dtype the simulator holds values of `dt` in."""
    if dt.is_float:
        return np.dtype(np.float64) if dt.bits == 64 else np.dtype(np.float32)
    if dt.is_int:
        return np.dtype(np.int64)
    return np.dtype(np.bool_)


def to_rep(x: Any, dt: DType) -> Any:
    """Round a python/NumPy value to `dt` (hal cast rules) and return it in representation."""
    return cast(x, dt).astype(rep_dtype(dt))


def fast_to_rep(dt: DType) -> Any:
    """`to_rep(x, dt)` as one function, for codegen's rounding after each narrow op: for
    a non-saturating float dtype the same NumPy conversions as hal.dtypes.cast without its
    per-call dispatch (the simulator holds values as float32/float64/int64/bool, never as
    ml_dtypes arrays; the caller silences FP warnings)."""
    if dt.is_int:
        npd = dt.np_dtype
        return lambda x: _int_to_rep(x, dt, npd)
    if not dt.is_float or dt.saturates:
        return lambda x: to_rep(x, dt)
    npd, rep = dt.np_dtype, rep_dtype(dt)
    if npd == rep:
        return lambda x: np.asarray(x).astype(rep)
    return lambda x: np.asarray(x).astype(npd).astype(rep)


def _int_to_rep(x: Any, dt: DType, npd: np.dtype) -> Any:
    """to_rep(x, dt) for an integer dtype: an integer or bool value wraps (cast's astype)
    without cast's per-call dispatch; anything else goes through to_rep."""
    a = np.asarray(x)
    if a.dtype.kind in "iub":   # (astype(npd) made a new array: the second need not copy)
        return a.astype(npd).astype(np.int64, copy=False)
    return to_rep(a, dt)


_STORE_CASTS: dict[DType, Callable[[Any], np.ndarray]] = {}


def store_cast(dt: DType) -> Callable[[Any], np.ndarray]:
    """cast(x, dt) for a value in the simulator's representation stored to a buffer of
    `dt`: a float32/float64 value to a non-saturating float dtype, or an integer/bool value
    to an integer dtype, is the one astype cast would do (its dispatch and errstate are
    per call; the caller silences FP warnings); anything else calls cast."""
    got = _STORE_CASTS.get(dt)
    if got is None:
        got = _STORE_CASTS[dt] = _make_store_cast(dt)
    return got


def _make_store_cast(dt: DType) -> Callable[[Any], np.ndarray]:
    npd = dt.np_dtype
    if dt.is_int:
        kinds = "iub"
    elif dt.is_float and not dt.saturates:
        kinds = "f"
    else:
        return lambda x: cast(x, dt)

    def conv(x: Any) -> np.ndarray:
        a = np.asarray(x)
        # (float64 -> bf16 keeps cast's own path: _f64_to_bf16 for large arrays)
        if a.dtype.kind in kinds and not (a.dtype == np.float64 and dt == bf16):
            return a.astype(npd, copy=False)   # (stg only reads it: no copy when it fits)
        return cast(a, dt)
    return conv


def div_by_const(a: Any, c: int) -> Any:
    """C integer division a / c for a positive constant c (truncates toward zero)."""
    if ndim(a) == 0:
        a = int(a)
        return a // c if a >= 0 else -((-a) // c)
    if a.size and int_min(a) < 0:
        return np.where(a < 0, -((-a) // c), a // c)
    return a >> (c.bit_length() - 1) if c & (c - 1) == 0 else a // c


def rem_by_const(a: Any, c: int) -> Any:
    """C remainder a % c for a positive constant c (sign of the dividend)."""
    if ndim(a) == 0:
        a = int(a)
        return a % c if a >= 0 else -((-a) % c)
    if a.size and int_min(a) < 0:
        return np.where(a < 0, -((-a) % c), a % c)
    if c & (c - 1) == 0:
        return a & (c - 1)
    if a.size < REM_BY_DIVISION_MIN:
        return a % c
    # a - (a // c) * c: NumPy divides int64 by a scalar with libdivide but has no such
    # path for %, which was ~3x slower on large lane arrays (exact: 0 <= a, q * c <= a)
    q = a // c
    q *= c
    return np.subtract(a, q, out=q)

