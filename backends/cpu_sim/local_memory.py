"""Local memory of a wave: per-thread arrays held as registers (`LocalMemory`).

A local buffer is one entry per element, each a lane array or a scalar (never mutated in
place): a constant or loop-counter index, the common case, selects an entry directly; a
per-lane index (local memory on hardware) gathers across the entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .values import ndim

_INT_TYPES = frozenset((int, np.int64))   # a uniform index: a Python or NumPy int


class LocalMemory:
    """ldl and stl, called by the generated code (mixed into lanes.Wave: uses its `loc`,
    `loc_buf`, masks and bounds checks)."""

    def ldl(self, j: int, idx: Any, lmask: Any, other: Any, m: Any, site: int) -> Any:
        rows = self.loc[j]
        if lmask is None and type(idx) in _INT_TYPES and 0 <= idx < len(rows):
            return rows[idx]   # the common case: a constant or loop-counter index
        act = self._act(m, lmask)
        if act is False:
            return other
        lb, rows = self.loc_buf[j], self.loc[j]
        safe = self._bounds(idx, lb.size, act, site, lb.name, "local")
        if ndim(safe) == 0:
            v = rows[safe]
        else:  # a per-lane index (local memory on hardware): gather across elements
            v = np.stack([np.broadcast_to(r, (self.L,)) for r in rows])[safe, self.lane]
        if lmask is not None and ndim(lmask) > 0:
            v = np.where(act, v, other)
        return v

    def stl(self, j: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        rows = self.loc[j]
        if smask is None and type(idx) in _INT_TYPES and 0 <= idx < len(rows):
            rows[idx] = val if m is None else np.where(m, val, rows[idx])
            return   # the common case: a constant or loop-counter index
        act = self._act(m, smask)
        if act is False:
            return
        lb, rows = self.loc_buf[j], self.loc[j]
        i = self._bounds(idx, lb.size, act, site, lb.name, "local")
        if ndim(i) == 0:
            rows[i] = val if act is None else np.where(act, val, rows[i])
            return
        for r in np.unique(i if act is None else i[act]).tolist():
            hit = (i == r) if act is None else ((i == r) & act)
            rows[r] = np.where(hit, val, rows[r])
