"""Where each short-lived tensor of a plan sits in one device arena: `arena_layout`.

A GPU executor that gives every intermediate its own buffer needs the sum of all of them,
far more than the plan's peak (`fusion.memory.memory_peak`) on a deep model. Tensors whose
lives (`fusion.memory.live_spans`: from the group that writes one to the last group that
reads it) do not overlap can share bytes. This module places such requests in one arena
with the greedy-by-size heuristic of TensorFlow Lite's arena planner (Pisarchyk and Lee,
"Efficient Memory Management for Deep Neural Net Inference", 2020): largest first, each
at the lowest aligned offset that no tensor live at the same time occupies (best fit in
the gaps, else past the end).

The layout is pure data (offsets), so it is checked without a device: no two requests
whose lives overlap share a byte (`ArenaLayout.check`, used by the tests).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALIGNMENT = 256  # cudaMalloc/hipMalloc alignment: vector loads and TMA need >= 16/128 bytes


@dataclass(frozen=True)
class ArenaRequest:
    """`nbytes` live from group `first` to group `last` (inclusive, in run order)."""

    name: str
    nbytes: int
    first: int
    last: int


@dataclass(frozen=True)
class ArenaBlock:
    request: ArenaRequest
    offset: int


@dataclass(frozen=True)
class ArenaLayout:
    blocks: tuple[ArenaBlock, ...]
    nbytes: int                      # the arena's size
    alignment: int

    @property
    def unshared_bytes(self) -> int:
        """What one buffer per tensor would take (each rounded up to the alignment)."""
        return sum(_round_up(b.request.nbytes, self.alignment) for b in self.blocks)

    def offset(self, name: str) -> int:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, int]:
        return {b.request.name: b.offset for b in self.blocks}

    def check(self) -> None:
        """Raise AssertionError naming two requests that overlap in both life and bytes."""
        bs = sorted(self.blocks, key=lambda b: b.offset)
        for i, a in enumerate(bs):
            for b in bs[i + 1:]:
                if b.offset >= a.offset + a.request.nbytes:
                    break
                if _lives_overlap(a.request, b.request):
                    raise AssertionError(f"arena: {a.request} at {a.offset} and {b.request} "
                                         f"at {b.offset} share bytes while both are live")
            assert a.offset % self.alignment == 0 and a.offset + a.request.nbytes <= self.nbytes


def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _lives_overlap(a: ArenaRequest, b: ArenaRequest) -> bool:
    return a.first <= b.last and b.first <= a.last


def arena_layout(requests: Iterable[ArenaRequest], alignment: int = ALIGNMENT) -> ArenaLayout:
    """Offsets for every request (greedy by size, best fit among live neighbours' gaps)."""
    placed: list[ArenaBlock] = []
    size = 0
    order = sorted(requests, key=lambda r: (-r.nbytes, r.first, r.name))
    for r in order:
        need = _round_up(max(r.nbytes, 1), alignment)
        busy = sorted((b.offset, b.offset + _round_up(max(b.request.nbytes, 1), alignment))
                      for b in placed if _lives_overlap(b.request, r))
        best, best_gap, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= need and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        offset = cursor if best is None else best
        placed.append(ArenaBlock(r, offset))
        size = max(size, offset + need)
    return ArenaLayout(tuple(placed), size, alignment)
