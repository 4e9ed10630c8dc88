"""Bounds checks of the wave's memory accesses (global, shared, local): `Bounds`.

An active lane's index outside its buffer is an `out_of_bounds` fault naming the lane
(check=True); unchecked, a load reads a clamped index and a store or atomic drops the
stray lanes' writes (a uniform store index outside the buffer writes nothing). The inline
predicates let ldg/lds take the common case (an int64 lane array wholly in range)
without a call into `_bounds`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scans import all_in_range, first_true, int_max
from .values import ndim

_I64 = np.dtype(np.int64)


def lane_indices_in_range(idx: Any, size: int) -> bool:
    """idx is a non-empty int64 lane array (not a subclass) with every index in [0, size):
    the accesses' common case, checked inline as _bounds' first branch checks it."""
    return type(idx) is np.ndarray and idx.dtype is _I64 and idx.ndim != 0 and \
        idx.size != 0 and int_max(idx.view(np.uint64)) < size


def lane_array(idx: Any) -> bool:
    """idx is a non-empty int64 lane array (not a subclass): where lane_indices_in_range
    is False for such an array, some index is outside the range."""
    return type(idx) is np.ndarray and idx.dtype is _I64 and idx.ndim == 1 and idx.size != 0


class Bounds:
    """Index checks against a buffer's size (mixed into lanes.Wave: uses its `check`,
    `_first` and `_fail`)."""

    def _bounds(self, idx: Any, size: int, act: np.ndarray | None, site: int, buf: str,
                space: str) -> Any:
        """Check active lanes' indices against [0, size); return indices safe to gather."""
        if type(idx) is np.ndarray and idx.ndim:   # the common case first (called a lot)
            if all_in_range(idx, size):
                return idx
            return self._out_of_range(idx, size, act, site, buf, space)
        elif ndim(idx) == 0:
            i = int(idx)
            if 0 <= i < size:
                return i
            if self.check and (act is None or act.any()):
                lane = 0 if act is None else int(np.flatnonzero(act)[0])
                self._oob(site, lane, buf, space, i, size)
            return min(max(i, 0), size - 1)
        elif all_in_range(idx, size):   # (an ndarray subclass)
            return idx
        return self._out_of_range(idx, size, act, site, buf, space)

    def _out_of_range(self, idx: np.ndarray, size: int, act: np.ndarray | None, site: int,
                      buf: str, space: str) -> np.ndarray:
        """_bounds of a lane array with some index outside [0, size) (the masked tail of
        a loop, usually): report the first active lane's (check=True), else clip."""
        if self.check:
            if type(idx) is np.ndarray and idx.dtype is _I64 and idx.ndim == 1:
                # one pass: a negative index seen as uint64 is past any size
                bad = idx.view(np.uint64) >= size
                if act is not None:
                    bad &= act
                k = first_true(bad)
                lane = None if k < 0 else k
            else:
                lane = self._first((idx < 0) | (idx >= size), act)
            if lane is not None:
                self._oob(site, lane, buf, space, int(idx[lane]), size)
        return np.minimum(np.maximum(idx, 0), size - 1)   # np.clip's values, fewer calls

    def _store_bounds(self, i: Any, v: Any, size: int, site: int, buf: str,
                      space: str) -> tuple[Any, Any]:
        """Indices/values of the active lanes of a store; with check=False the lanes that
        fall outside [0, size) are dropped (hardware would write past the buffer), and so
        is a uniform index outside it (no index and no value: nothing is written)."""
        if self.check:
            return self._bounds(i, size, None, site, buf, space), v
        if ndim(i) == 0:
            if 0 <= int(i) < size:
                return i, v
            return np.zeros(0, np.int64), (np.asarray(v).reshape(-1)[:0] if ndim(v) else v)
        if all_in_range(i, size):
            return i, v
        keep = (i >= 0) & (i < size)
        return i[keep], (v[keep] if ndim(v) else v)

    def _atomic_bounds(self, i: np.ndarray, size: int, site: int, buf: str,
                       space: str) -> np.ndarray | None:
        """The lanes of an atomic (`i`: one index per active lane) that stay: None for all
        (checked: an index outside [0, size) is an out_of_bounds fault), else a mask that
        drops the lanes outside it (check=False: hardware would add past the buffer, not
        into its first or last element)."""
        if self.check:
            self._bounds(i, size, None, site, buf, space)
            return None
        if all_in_range(i, size):
            return None
        return (i >= 0) & (i < size)

    def _oob(self, site: int, lane: int, buf: str, space: str, i: int, size: int) -> None:
        self._fail("out_of_bounds", site, lane,
                   f"{space} access {buf}[{i}] is out of bounds (size {size})", buffer=buf,
                   index=i, hint="check the mask of this access (e.g. i < n, not i <= n)")

    def fail_oob(self, site: int, lane: int, buf: str, space: str, i: int, size: int) -> None:
        """An out_of_bounds fault (for contract.Reduction)."""
        self._oob(site, lane, buf, space, i, size)
