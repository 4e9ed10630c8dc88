"""Bit-for-bit equality of arrays for tests of fast paths against their reference paths."""

from __future__ import annotations

import numpy as np


def same_bits(x, y) -> bool:
    """Equal bit for bit (NaN payloads aside): same dtype, shape, values and zero signs."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind != "f":
        return bool(np.array_equal(x, y))
    both_nan = np.isnan(x) & np.isnan(y)
    return bool(np.all(both_nan | ((x == y) & (np.signbit(x) == np.signbit(y)))))
