"""Lane geometry of a wave: each lane's block and thread, its block's start in a shared
buffer, and its block coordinates (blockIdx).

A wave is `B` whole blocks of `T` threads run together as `L = B*T` lanes; lane `l` is
thread `l % T` of the wave's block `l // T`. Waves of the same shape share these arrays
(read-only): most launches run many small waves, and building them per wave showed in
profiles.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

SHARED_GEOMETRY_LANES = 1 << 14
_geometry: dict[tuple, Any] = {}


def _shared_readonly(key: tuple, lanes: int, make: Callable[[], Any]) -> Any:
    """make(), kept (frozen) for the next wave of the same key when it has few lanes."""
    if lanes > SHARED_GEOMETRY_LANES:
        return make()
    got = _geometry.get(key)
    if got is None:
        got = make()
        for a in (got if isinstance(got, tuple) else (got,)):
            a.flags.writeable = False
        _geometry[key] = got
    return got


def _make_lane_geometry(block: int, nblocks: int) -> tuple[np.ndarray, ...]:
    lane = np.arange(block * nblocks, dtype=np.int64)
    blk = lane // block
    return lane, blk, lane - blk * block


def lane_geometry(block: int, nblocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lane, block of the lane, thread of the lane) over the wave's block * nblocks lanes."""
    return _shared_readonly(("lanes", block, nblocks), block * nblocks,
                            lambda: _make_lane_geometry(block, nblocks))


def shared_offsets(block: int, nblocks: int, size: int) -> np.ndarray:
    """Per lane (block threads each), the start of its block's part of a shared buffer."""
    return _shared_readonly(("shared", block, nblocks, size), block * nblocks,
                            lambda: lane_geometry(block, nblocks)[1] * size)


def coordinates_of_blocks(grid: tuple[int, int, int], block: int,
                          lin: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blockIdx.x, .y, .z) of each lane of the blocks of linear ids `lin` (`block`
    lanes each), new arrays."""
    # per block, then spread to the block's lanes (the divisions on every lane showed in
    # the per-wave cost)
    lin = np.asarray(lin, np.int64)
    return (np.repeat(lin % grid[0], block), np.repeat((lin // grid[0]) % grid[1], block),
            np.repeat(lin // (grid[0] * grid[1]), block))


BLOCK_COORDINATES_KEPT = 256
_coordinates: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()


def block_coordinates(grid: tuple[int, int, int], block: int, block0: int,
                      nblocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blockIdx.x, .y, .z) of each lane of a wave of blocks block0 .. block0 + nblocks - 1,
    read-only; the latest few small waves' are kept (a suite's launches repeat shapes:
    a case runs fused and unfused, and cases share sizes)."""
    if block * nblocks > SHARED_GEOMETRY_LANES:
        return coordinates_of_blocks(grid, block, np.arange(block0, block0 + nblocks))
    key = (tuple(grid), block, block0, nblocks)
    got = _coordinates.get(key)
    if got is None:
        got = coordinates_of_blocks(grid, block, np.arange(block0, block0 + nblocks))
        for a in got:
            a.flags.writeable = False
        _coordinates[key] = got
        if len(_coordinates) > BLOCK_COORDINATES_KEPT:
            _coordinates.popitem(last=False)
    else:
        _coordinates.move_to_end(key)
    return got
