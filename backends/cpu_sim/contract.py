"""Reduction: run one matched multiply-accumulate loop (vectorize.py) for a whole wave.

Generated code creates a Reduction for the loop's iterations `ks` under the active
mask, declares each operand (a load whose index is `coef * k + rest(lane)`), then
calls `run(pairs)` for the per-lane sums of x * y over the loop, in float64.

Per operand, at declaration: the i32 range of the index, the bounds of every
(iteration, active lane) access and, for shared memory, reads of words another
thread wrote since the last barrier are checked exactly as the plain loop
would, from the lane part and the iteration part of the index (both ranges are
exact because the index is their sum). Bytes are counted per active lane and
iteration.

In `run`: lanes of one block whose operand index differs only by the iteration
read the same values; grouping them (np.unique per block, cached across loop
executions while the lane part only shifts) turns each block's sums into one
product of its distinct rows (x operands) and columns (y operands), batched over
the wave's blocks; each lane then reads its own (row, column) of its block's
product. Reads are recorded for race checking per group (a word read by a group
of two or more threads counts as read by several). A mask that switches whole
blocks on or off (a loop whose trip count differs per block, e.g. causal
attention's key loop) keeps this path: only the active blocks' products are
taken, read-recorded and race-checked, and inactive lanes sum to 0 as on the
per-lane path. When grouping does not apply (a mask inside a block, unequal
groups per block, or a product much larger than the per-lane work) the sums are
taken lane by lane in chunks of iterations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_ELEMENTS = 1 << 21      # (iteration, lane) elements per chunk on the per-lane path
WASTE_LIMIT = 4               # block products at most this many times the per-lane work


class _Op:
    __slots__ = ("space", "slot", "base", "row", "conv", "group")

    def __init__(self, space: str, slot: int, base: np.ndarray, row: np.ndarray, conv: Any):
        self.space, self.slot, self.base, self.row, self.conv = space, slot, base, row, conv
        self.group: tuple | None = None


class Reduction:
    def __init__(self, W: Any, ks: np.ndarray, m: np.ndarray | None):
        if m is not None and bool(m.all()):
            m = None
        self.W, self.ks, self.m = W, ks, m
        self.n_active = W.tally(m)
        # bool [B]: the active blocks, when the mask switches whole blocks (else None)
        self.blocks: np.ndarray | None = None
        if m is not None and self.n_active:
            per = m.reshape(W.B, W.T)
            on = per.all(axis=1)
            if bool((on | ~per.any(axis=1)).all()):
                self.blocks = on
        self.ops: list[_Op] = []
        self.stray = False   # an unchecked (check=False) access outside its buffer: clip

    # ------------------------------------------------------------------ operands
    def operand(self, space: str, slot: int, rest: Any, coef: int, conv: Any, site: int,
                i32: bool) -> None:
        W, m, ks = self.W, self.m, self.ks
        rest = W.lanes_int(rest)
        row = ks * coef
        if space == "g":
            size, itemsize, name = W.g_n[slot], W.g_param[slot].dtype.itemsize, W.g_param[slot].name
            base = rest
        else:
            sb = W.sh_buf[slot]
            size, itemsize, name = sb.size, sb.dtype.itemsize, sb.name
            base = W.sh_off[slot] + rest
        op = _Op(space, slot, base, row, conv)
        self.ops.append(op)
        if self.n_active == 0:
            return
        ra = rest if m is None else rest[m]
        lo, hi = int(ra.min()) + int(row.min()), int(ra.max()) + int(row.max())
        if i32 and W.check and (lo < -(2**31) or hi > 2**31 - 1 or
                                int(np.abs(row).max()) > 2**31 - 1):
            k, lane, value = self._first_bad(rest, row, lambda v: (v < -(2**31)) | (v > 2**31 - 1))
            W.fail_overflow(site, lane, value)
        if lo < 0 or hi >= size:
            k, lane, value = self._first_bad(rest, row, lambda v: (v < 0) | (v >= size))
            if W.check:
                W.fail_oob(site, lane, name, "global" if space == "g" else "shared", value, size)
            self.stray = True
        count = self.n_active * ks.size
        if space == "g":
            W.gr += count * itemsize
        else:
            W.sr += count * itemsize
            if W.check and W.sh_dirty[slot]:
                self._check_written(op, site)

    def _first_bad(self, rest: np.ndarray, row: np.ndarray, bad_fn) -> tuple[int, int, int]:
        """The first (iteration, lane, index) in program order where bad_fn holds."""
        m = self.m
        for k, r in enumerate(row.tolist()):
            v = rest + r
            bad = bad_fn(v)
            if m is not None:
                bad &= m
            hits = np.flatnonzero(bad)
            if hits.size:
                lane = int(hits[0])
                return k, lane, int(v[lane])
        raise AssertionError("range said out of bounds but no access is")

    def _whole_blocks(self) -> bool:
        """True when the block path applies: every lane active, or whole blocks."""
        return (self.m is None or self.blocks is not None) and not self.stray

    def _check_written(self, op: _Op, site: int) -> None:
        if self._whole_blocks() and self._no_race_by_groups(op):
            return
        W, m = self.W, self.m
        lanes = np.arange(W.L) if m is None else np.flatnonzero(m)
        step = max(1, CHUNK_ELEMENTS // max(1, lanes.size))
        for k0 in range(0, op.row.size, step):
            words = op.base[lanes][None, :] + op.row[k0:k0 + step, None]
            W.check_written(op.slot, words, lanes, site)

    def _no_race_by_groups(self, op: _Op) -> bool:
        """True when no (iteration, lane) read of `op` hits a word another thread wrote
        since the barrier, decided once per group of lanes that read the same words
        (_grouping: one block, one lane part): a written word read by a group of two or
        more threads is a race for one of them; by a lone thread, unless it wrote it.
        False (some race, or no grouping) sends the caller to the per-lane check, which
        reports the first race in (iteration, lane) order as before."""
        g = self._grouping(op)
        if g is None:
            return False
        W = self.W
        _, first, n, sizes = g
        reps, lone = first.reshape(-1), sizes == 1
        if self.blocks is not None:     # only the active blocks read
            reps = first[self.blocks].reshape(-1)
            lone = lone.reshape(W.B, n)[self.blocks].reshape(-1)
        if reps.size * 2 > self.n_active:  # hardly any sharing: the per-lane check costs the same
            return False
        base, tid, lone = op.base[reps][None, :], W.tid[reps][None, :], lone[None, :]
        writer = W.sh_writer[op.slot]
        step = max(1, CHUNK_ELEMENTS // max(1, reps.size))
        for k0 in range(0, op.row.size, step):
            w = writer[base + op.row[k0:k0 + step, None]]
            if bool(((w >= 0) & (~lone | (w != tid))).any()):
                return False
        return True

    # ------------------------------------------------------------------ sums
    def run(self, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
        W = self.W
        if self.n_active == 0:
            return [np.zeros(W.L) for _ in pairs]
        sums = self._by_blocks(pairs) if self._whole_blocks() else None
        if sums is None:
            sums = self._by_lanes(pairs)
        return sums

    def _grouping(self, op: _Op) -> tuple | None:
        """(local group per lane, representative lanes [B, n], n, size per group) or None."""
        W = self.W
        cache = W.reduction_groups
        key = (op.space, op.slot, op.base.size)
        hit = cache.get(key)
        if hit is not None:
            prev_base, grouping = hit
            d = op.base - prev_base
            if bool((d == d[0]).all()):
                return grouping
        base = op.base
        lo = int(base.min())
        span = int(base.max()) - lo + 1
        comp = W.blk * span + (base - lo)
        uk, first, inv = np.unique(comp, return_index=True, return_inverse=True)
        per_block = np.bincount(W.blk[first], minlength=W.B)
        n = uk.size // W.B
        if n * W.B != uk.size or not bool((per_block == n).all()):
            cache[key] = (base, None)
            return None
        local = inv.reshape(-1) - W.blk * n
        grouping = (local, first.reshape(W.B, n), n, np.bincount(inv.reshape(-1)))
        cache[key] = (base, grouping)
        return grouping

    def _values(self, op: _Op, flat: np.ndarray, clip: bool = False) -> np.ndarray:
        W = self.W
        mem = W.g[op.slot] if op.space == "g" else W.sh[op.slot]
        v = np.take(mem, flat, mode="clip") if clip else np.take(mem, flat)
        if op.space == "g" and W.g_conv[op.slot] is not None:
            v = v.astype(W.g_conv[op.slot])
        if op.conv is not None:
            v = op.conv(v)
        return v.astype(np.float64, copy=False)

    def _by_blocks(self, pairs: list[tuple[int, int]]) -> list[np.ndarray] | None:
        W = self.W
        xs = sorted({p for p, _ in pairs})
        ys = sorted({q for _, q in pairs})
        groups = {}
        for i in set(xs) | set(ys):
            g = self._grouping(self.ops[i])
            if g is None:
                return None
            groups[i] = g
        ra = sum(groups[i][2] for i in xs)
        rb = sum(groups[i][2] for i in ys)
        blocks = self.blocks
        nb = W.B if blocks is None else int(np.count_nonzero(blocks))
        if nb * ra * rb > WASTE_LIMIT * len(pairs) * self.n_active:
            return None
        a, offa, a_seen = self._panel(xs, groups, "a")
        b, offb, b_seen = self._panel(ys, groups, "b")
        seen = (set(xs) if a_seen else set()) | (set(ys) if b_seen else set())
        if blocks is None:
            prod = np.matmul(a, b).reshape(-1)                              # [B * ra * rb]
        else:   # inactive blocks' products stay 0, as the per-lane path's sums
            prod = np.zeros((W.B, ra, rb))
            prod[blocks] = np.matmul(a[blocks], b[blocks])
            prod = prod.reshape(-1)
        out = []
        for p, q in pairs:
            # where each lane's (row, column) sits in its block's product; the same for
            # every execution of the loop while the groupings hold, so it is kept
            key = (p, q, offa[p], offb[q], ra, rb)
            hit = W.pick_index.get(key)
            if hit is None or hit[0] is not groups[p] or hit[1] is not groups[q]:
                idx = W.blk * (ra * rb) + (offa[p] + groups[p][0]) * rb + (offb[q] + groups[q][0])
                hit = W.pick_index[key] = (groups[p], groups[q], idx)
            out.append(prod[hit[2]])
        for i in set(xs) | set(ys):
            op = self.ops[i]
            # the same words read by the same groups since the last barrier: recorded once
            if op.space == "s" and W.check and i not in seen:
                _, rep, n, size = groups[i]
                if blocks is not None:
                    rep, size = rep[blocks], size.reshape(W.B, n)[blocks]
                reps = rep.reshape(-1)
                words = op.base[reps][None, :] + op.row[:, None]
                readers = np.where(size.reshape(-1) > 1, -2, W.tid[reps]).astype(np.int32)
                W.record_reads(op.slot, words, readers)
        return out

    def _panel(self, ids: list[int], groups: dict, role: str
               ) -> tuple[np.ndarray, dict[int, int], bool]:
        """The distinct rows of the operands `ids`, float64, contiguous: [B, rows, K] for
        role "a", [B, K, rows] for role "b" (NumPy hands contiguous stacks to BLAS).
        Reused while the memory, the rows and the iterations are the same (attention
        reads one Q tile against every K sub-tile). The flag says the same panel was
        used since the last barrier by at least the blocks active now, so their reads
        are already recorded. Under a whole-block mask the inactive blocks' indices may
        point anywhere: their values are read clipped to the memory and never used."""
        W = self.W
        blocks = self.blocks
        version = tuple((self.ops[i].space, self.ops[i].slot,
                         (W.g_version if self.ops[i].space == "g" else W.sh_version)[self.ops[i].slot])
                        for i in ids)
        hit = W.panels.get(role)
        if hit is not None and hit[0] == version and all(
                np.array_equal(self.ops[i].row, r) and np.array_equal(self.ops[i].base, b)
                for i, r, b in zip(ids, hit[1], hit[2], strict=True)):
            recorded = hit[6] if hit[5] == W.epoch else np.zeros(W.B, bool)
            covered = bool(recorded.all()) if blocks is None else \
                not bool((blocks & ~recorded).any())
            now = np.ones(W.B, bool) if blocks is None else (recorded | blocks)
            W.panels[role] = (*hit[:5], W.epoch, now)
            return hit[3], hit[4], covered
        parts, offs, off = [], {}, 0
        for i in ids:
            op, (_, rep, n, _) = self.ops[i], groups[i]
            base = op.base[rep.reshape(-1)].reshape(W.B, n)
            if role == "a":
                flat = base[:, :, None] + op.row[None, None, :]                # [B, n, K]
            else:
                flat = base[:, None, :] + op.row[None, :, None]                # [B, K, n]
            parts.append(self._values(op, flat, clip=blocks is not None))
            offs[i] = off
            off += n
        panel = np.concatenate(parts, axis=1 if role == "a" else 2) if len(parts) > 1 else parts[0]
        now = np.ones(W.B, bool) if blocks is None else blocks.copy()
        W.panels[role] = (version, [self.ops[i].row for i in ids],
                          [self.ops[i].base for i in ids], panel, offs, W.epoch, now)
        return panel, offs, False

    def _by_lanes(self, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
        W, m = self.W, self.m
        lanes = np.arange(W.L) if m is None else np.flatnonzero(m)
        out = [np.zeros(W.L) for _ in pairs]
        step = max(1, CHUNK_ELEMENTS // max(1, lanes.size))
        used = sorted({i for pq in pairs for i in pq})
        for k0 in range(0, self.ks.size, step):
            vals = {}
            for i in used:
                op = self.ops[i]
                flat = op.base[lanes][None, :] + op.row[k0:k0 + step, None]
                size = W.g_n[op.slot] if op.space == "g" else W.sh_buf[op.slot].size
                if op.space == "s":
                    lo = W.sh_off[op.slot][lanes][None, :]
                    flat = np.clip(flat, lo, lo + size - 1)
                    if W.check:
                        W.record_reads(op.slot, flat, W.tid[lanes].astype(np.int32))
                else:
                    flat = np.clip(flat, 0, size - 1)
                vals[i] = self._values(op, flat)
            for r, (p, q) in enumerate(pairs):
                out[r][lanes] += np.einsum("kl,kl->l", vals[p], vals[q])
        return out


__all__ = ["Reduction", "CHUNK_ELEMENTS"]
