"""hal.dtypes.cast float64 -> bf16 on large arrays goes through float32 and fixes the
double-rounding cases: bitwise equal to ml_dtypes' direct rounding everywhere."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from hal import dtypes
from hal.dtypes import bf16, cast


def _hard_values() -> np.ndarray:
    rng = np.random.default_rng(2)
    hi = np.arange(0, 1 << 16, dtype=np.uint32) << 16
    with np.errstate(invalid="ignore"):   # the NaN patterns
        exact = hi.view(np.float32).astype(np.float64)            # every bf16 value
        mid = (hi | 0x8000).view(np.float32).astype(np.float64)   # every bf16 midpoint
    eps = np.ldexp(1.0, -40)   # below f32 precision: these round to the midpoint in f32
    return np.concatenate([
        exact, mid, mid * (1 + eps), mid * (1 - eps), np.nextafter(mid, np.inf),
        np.nextafter(mid, -np.inf),
        rng.standard_normal(200_000) * np.ldexp(1.0, rng.integers(-160, 140, 200_000)),
        [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e300, -1e300, 1e-300, -1e-300,
         3.3895e38, 3.3961e38, 3.4028235e38, 3.4028236e38, 1e39, np.ldexp(1.0, -134),
         np.ldexp(1.5, -134), np.ldexp(1.0, -150)]])


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    bx, by = x.view(np.uint16), y.view(np.uint16)
    nan = np.isnan(x.astype(np.float32)) & np.isnan(y.astype(np.float32))
    return bool(((bx == by) | nan).all())


def test_fast_path_is_taken_and_bitwise_equal_to_direct_rounding(monkeypatch) -> None:
    a = _hard_values()
    assert a.size >= dtypes._BF16_VIA_F32_MIN
    calls = []
    real = dtypes._f64_to_bf16
    monkeypatch.setattr(dtypes, "_f64_to_bf16", lambda x: calls.append(1) or real(x))
    with np.errstate(all="ignore"):
        got, want = cast(a, bf16), a.astype(ml_dtypes.bfloat16)
    assert calls and got.dtype == ml_dtypes.bfloat16 and got.shape == a.shape
    assert _same(got, want)
    # the midpoint neighbours are the double-rounding cases: plain f64 -> f32 -> bf16
    # gets some of them wrong, so the fix-up is what makes this pass
    with np.errstate(all="ignore"):
        twice = a.astype(np.float32).astype(ml_dtypes.bfloat16)
    assert not _same(twice, want)


def test_shapes_and_strides_are_kept() -> None:
    a = np.random.default_rng(0).standard_normal((300, 700)).T * 1e-3   # F-ordered view
    got = cast(a, bf16)
    assert got.shape == (700, 300)
    assert _same(got, a.astype(ml_dtypes.bfloat16))


def test_an_unpickled_bf16_takes_the_same_path(monkeypatch) -> None:
    """A DType from another process (pickled) is equal to bf16, not the same object."""
    import pickle

    other = pickle.loads(pickle.dumps(bf16))
    assert other == bf16 and other is not bf16
    calls = []
    real = dtypes._f64_to_bf16
    monkeypatch.setattr(dtypes, "_f64_to_bf16", lambda x: calls.append(1) or real(x))
    a = np.random.default_rng(3).standard_normal(dtypes._BF16_VIA_F32_MIN)
    assert _same(cast(a, other), a.astype(ml_dtypes.bfloat16)) and calls == [1]


def test_narrow_of_rounded_values_is_the_cast() -> None:
    """dtypes.narrow of float64 values already rounded to bf16 (the reference's wide form):
    the cast's bits, for normals, subnormals, signed zeros, infs and NaN, in any shape and
    layout; other dtypes go through cast."""
    from hal.dtypes import f16, narrow, round_to

    rng = np.random.default_rng(3)
    raw = np.concatenate([rng.standard_normal(5000) * 10.0 ** rng.integers(-45, 38, 5000),
                          [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-41, -3e-40]])
    wide = round_to(raw, bf16)
    for a in (wide, wide[:5000].reshape(50, 100), wide[:5000].reshape(50, 100).T, wide[3:]):
        got, want = narrow(a, bf16), cast(a, bf16)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.view(np.uint16).tobytes() == np.ascontiguousarray(want).view(
            np.uint16).tobytes()
    h = round_to(raw, f16)
    assert narrow(h, f16).tobytes() == cast(h, f16).tobytes()
    assert narrow(np.float64(1.5), bf16) == cast(np.float64(1.5), bf16)
