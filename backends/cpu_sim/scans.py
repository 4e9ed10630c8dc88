"""Cheap scans over lane arrays: the first True, the extremes, every index in range.

The wave's checks (bounds, i32 overflow, races) and C integer division run these on
every access. They find an extreme or a first True with argmax/argmin: one C call with
no ufunc machinery, where max()/min()/any() pay a reduction's setup (~2 us, more than
the pass itself over a small wave's lanes, and the simulator makes millions of them).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def first_true(b: np.ndarray) -> int:
    """Flat index of the first True of a bool array, -1 if there is none."""
    if not b.size:
        return -1
    k = int(b.argmax())    # the first maximum: the first True, else 0
    return k if b.item(k) else -1


def int_max(a: np.ndarray) -> Any:
    """The largest element of a non-empty array (a Python scalar)."""
    return a.item(a.argmax())


def int_min(a: np.ndarray) -> Any:
    """The smallest element of a non-empty array (a Python scalar)."""
    return a.item(a.argmin())


def all_in_range(idx: np.ndarray, size: int) -> bool:
    """Every index of the array in [0, size): for int64 one pass over the indices seen as
    uint64 (a negative index becomes one >= 2**63, so past any size)."""
    if idx.size == 0:
        return True
    if idx.dtype == np.int64:
        return int_max(idx.view(np.uint64)) < size
    return bool(idx.min() >= 0 and idx.max() < size)
