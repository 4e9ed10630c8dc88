"""Global memory of a wave: loads, stores and atomic adds (`GlobalMemory`).

Global buffers are the caller's arrays, in their own dtype, changed in place. A load
converts to the simulator's representation (values.rep_dtype); a store casts to the
buffer's dtype (values.store_cast). Every access counts its bytes (`gr`, `gw`); a store
bumps the buffer's `g_version` (so contract.Reduction can reuse a gathered panel) and,
in a sampled wave, records the indices it hit (`written`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.dtypes import cast

from .bounds import lane_array, lane_indices_in_range
from .values import ndim


class GlobalMemory:
    """ldg, stg and atomic_g, called by the generated code (mixed into lanes.Wave: uses
    its global buffer tables `g*`, counters, masks and bounds checks)."""

    def ldg(self, s: int, idx: Any, lmask: Any, other: Any, m: Any, site: int) -> Any:
        act = m if lmask is None else self._act(m, lmask)
        if act is False:
            return other
        buf, size = self.g[s], self.g_n[s]
        self.gr += (self.L if act is None else self.tally(act)) * self.g_isz[s]
        if lane_indices_in_range(idx, size):   # the common case without _bounds' calls
            v = buf.take(idx)
        elif lane_array(idx):   # (not in range: _bounds would check it again)
            v = buf.take(self._out_of_range(idx, size, act, site, self.g_param[s].name,
                                            "global"))
        else:
            safe = self._bounds(idx, size, act, site, self.g_param[s].name, "global")
            v = buf[safe] if ndim(safe) == 0 else buf.take(safe)
        conv = self.g_conv[s]
        if conv is not None:
            v = v.astype(conv)
        if lmask is not None and ndim(lmask) > 0:
            v = np.where(act, v, other)
        return v

    def stg(self, s: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        p, buf = self.g_param[s], self.g[s]
        n = self._count(act)
        if n == 0:
            return
        i, v = self._sel(idx, act), self._sel(val, act)
        i, v = self._store_bounds(i, v, self.g_n[s], site, p.name, "global")
        v = self.g_store[s](v)
        if ndim(i) == 0 and ndim(v) > 0:
            v = v.reshape(-1)[-1]  # every lane stores to one word: one of them wins
        buf[i] = v
        self.g_version[s] += 1
        if self.written is not None:
            self.written[s].append(np.array(i, np.int64).reshape(-1))
        self.gw += n * p.dtype.itemsize

    def atomic_g(self, s: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        p, buf = self.g_param[s], self.g[s]
        n = self._count(act)
        if n == 0:
            return
        i = np.broadcast_to(self._sel(idx, act), (n,))
        v = np.broadcast_to(cast(self._sel(val, act), p.dtype), (n,))
        keep = self._atomic_bounds(np.asarray(i), self.g_n[s], site, p.name, "global")
        if keep is not None:
            i, v = i[keep], v[keep]
        np.add.at(buf, i, v)  # one rounding to the buffer dtype per add, as hardware atomics
        self.g_version[s] += 1
        if self.written is not None:
            self.written[s].append(np.array(i, np.int64).reshape(-1))
        self.atomics += n
        self.gr += n * p.dtype.itemsize
        self.gw += n * p.dtype.itemsize
