"""Shared memory of a wave: loads, stores and atomic adds (`SharedMemory`).

Shared memory is one array [B * size] per buffer (block-major); a lane reaches its
block's part through `sh_off` (geometry.shared_offsets). With check=True every access
also goes through the race tracking (races.py), and a read checks words a cp.async
still has in flight (mma_sim's `pipe`). Bank conflicts are counted by the matrix
statements' accesses (mma_sim), not here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bounds import lane_array, lane_indices_in_range
from .scans import all_in_range
from .values import ndim, to_rep


class SharedMemory:
    """lds, sts and atomic_s, called by the generated code (mixed into lanes.Wave: uses
    its shared buffer tables `sh*`, counters, masks, bounds checks and race tracking)."""

    def lds(self, j: int, idx: Any, lmask: Any, other: Any, m: Any, site: int) -> Any:
        act = m if lmask is None else self._act(m, lmask)
        if act is False:
            return other
        sb = self.sh_buf[j]
        if lane_indices_in_range(idx, sb.size):
            safe = idx
        elif lane_array(idx):   # (not in range: _bounds would check it again)
            safe = self._out_of_range(idx, sb.size, act, site, sb.name, "shared")
        else:
            safe = self._bounds(idx, sb.size, act, site, sb.name, "shared")
        n = self.L if act is None else self.tally(act)
        self.sr += n * self.sh_isz[j]
        if act is None and ndim(safe) == 0:
            # every thread of every block reads one word: gather per block, then spread
            words = self.block_base[j] + safe
            v = np.repeat(self.sh[j][words], self.T)
            if self.check:
                self._race_read_uniform(j, words, site)
                if self.pipe is not None:  # the word may still be in flight from a cp.async
                    self.pipe.check_read(self, j, self.sh_off[j] + safe, None, site)
            return v
        flat = self.sh_off[j] + safe
        v = self.sh[j].take(flat)
        if self.check and n:
            self._race_read(j, flat, act, site)
            if self.pipe is not None:  # a word still in flight from a cp.async
                self.pipe.check_read(self, j, flat, act, site)
        if lmask is not None and ndim(lmask) > 0:
            v = np.where(act, v, other)
        return v

    def sts(self, j: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        n = self._count(act)
        if n == 0:
            return
        sb = self.sh_buf[j]
        i, v, off = self._sel(idx, act), self._sel(val, act), self._sel(self.sh_off[j], act)
        if not self.check and ndim(i) > 0 and not all_in_range(i, sb.size):
            keep = (i >= 0) & (i < sb.size)   # unchecked: drop the stray lanes' writes
            i, off, v = i[keep], off[keep], (v[keep] if ndim(v) else v)
        i = self._bounds(i, sb.size, None, site, sb.name, "shared")
        flat = off + i
        if self.check:
            self._race_write(j, flat, act, site)
            if getattr(self, "hopper", None) is not None:   # generic-proxy write (wgmma_sim)
                from .wgmma_sim import note_generic_write
                note_generic_write(self, j, flat,
                                   self.lane_id if act is None else self.lane_id[act])
        self.sh[j][flat] = v
        self.sh_version[j] += 1
        self.sw += n * sb.dtype.itemsize

    def atomic_s(self, j: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        n = self._count(act)
        if n == 0:
            return
        sb = self.sh_buf[j]
        i = np.broadcast_to(self._sel(idx, act), (n,))
        keep = self._atomic_bounds(np.asarray(i), sb.size, site, sb.name, "shared")
        flat = np.broadcast_to(self._sel(self.sh_off[j], act) + i, (n,))
        v = np.broadcast_to(self._sel(val, act), (n,))
        if keep is not None:
            flat, v = flat[keep], v[keep]
        elif self.check:   # (checked: every lane is in bounds, keep is None)
            self._race_atomic(j, np.asarray(flat), act, site)
        self.sh_version[j] += 1
        if sb.dtype.bits < 32 and sb.dtype.is_float:
            for f, x in zip(flat.tolist(), v.tolist(), strict=False):  # round after each add
                self.sh[j][f] = to_rep(self.sh[j][f] + x, sb.dtype)
        else:
            np.add.at(self.sh[j], flat, v)
        self.atomics += n
        self.sr += n * sb.dtype.itemsize
        self.sw += n * sb.dtype.itemsize
