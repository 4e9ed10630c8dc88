"""TMA tensor maps: the box a `cp.async.bulk.tensor` copies and where it lands in shared
memory. The one place the tensor-map rules live; the lowering declares `TensorMap`s on the
kernel, cpu_sim executes the copies (backends/cpu_sim/wgmma_sim.py), the CUDA runtime encodes
them with the driver's cuTensorMapEncodeTiled (backends/cuda/tensor_maps.py).

Semantics (CUDA Driver API, cuTensorMapEncodeTiled; PTX ISA "cp.async.bulk.tensor",
"Tensor copy restrictions"): a tiled map of rank 1..5 describes a global tensor by its
sizes (innermost first) and byte strides of the outer dimensions (multiples of 16, below
2^40); a box of boxDim[i] <= 256 elements per dimension, boxDim[0] * element size a
multiple of 16 bytes and, with a swizzle, at most the swizzle span (32, 64 or 128 bytes).
A copy at coordinates c (innermost first) reads elements c + j for j < boxDim; those
outside the tensor are filled with zeros (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE). The box lands
in shared memory densely, innermost dimension contiguous, each row of boxDim[0] elements
followed by the next, the swizzle (hal.kernel.wgmma.swizzle) applied to the shared byte
address; with a swizzle the destination must be aligned to the pattern (1024 bytes for
128B). Completion is signalled to an mbarrier as box bytes of transactions, the full box
even where it was filled with zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hal.kernel.wgmma import SWIZZLES, pattern_bytes, swizzle


class TensorMapError(ValueError):
    """A tensor map cuTensorMapEncodeTiled would refuse (the message names the rule)."""


@dataclass(frozen=True)
class TensorMap:
    """A tiled TMA tensor map over global buffer `buffer` (a kernel BufferParam): `dims`
    and `box` in elements, innermost first; `strides` in bytes of dims[1:]."""

    name: str
    buffer: str
    dtype: str
    itemsize: int
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    box: tuple[int, ...]
    swizzle: int = 0

    def __post_init__(self) -> None:
        where = f"tensor map {self.name} over {self.buffer}"
        rank = len(self.dims)
        if not 1 <= rank <= 5 or len(self.box) != rank or len(self.strides) != rank - 1:
            raise TensorMapError(f"{where}: rank {rank} with {len(self.box)} box dims and "
                                 f"{len(self.strides)} strides (rank 1..5, rank - 1 strides)")
        if any(d <= 0 or d > 2**32 for d in self.dims):
            raise TensorMapError(f"{where}: sizes {self.dims} must be in 1..2^32")
        if any(s % 16 or not 0 < s < 2**40 for s in self.strides):
            raise TensorMapError(f"{where}: byte strides {self.strides} must be multiples "
                                 f"of 16 below 2^40")
        if any(not 0 < b <= 256 for b in self.box):
            raise TensorMapError(f"{where}: box {self.box} must be 1..256 per dimension")
        inner = self.box[0] * self.itemsize
        if inner % 16:
            raise TensorMapError(f"{where}: the box's inner extent is {inner} bytes, not a "
                                 f"multiple of 16")
        if self.swizzle not in SWIZZLES:
            raise TensorMapError(f"{where}: swizzle {self.swizzle} not one of {SWIZZLES}")
        if self.swizzle and inner > self.swizzle:
            raise TensorMapError(f"{where}: inner box extent {inner} bytes exceeds the "
                                 f"{self.swizzle}B swizzle span")

    @property
    def box_bytes(self) -> int:
        """Transaction bytes one copy signals (the whole box, zero-filled parts included)."""
        return math.prod(self.box) * self.itemsize

    @property
    def alignment(self) -> int:
        """Shared-memory alignment the destination needs (the swizzle pattern, else 128)."""
        return max(128, pattern_bytes(self.swizzle))

    def box_offsets(self) -> np.ndarray:
        """[box elements] shared byte offsets (from an aligned destination) of the box's
        elements in row-major order (innermost fastest), swizzle applied."""
        dense = np.arange(math.prod(self.box), dtype=np.int64) * self.itemsize
        return swizzle(dense, self.swizzle)

    def box_indices(self, coords) -> tuple[np.ndarray, np.ndarray]:
        """For box coordinates `coords` (innermost first): (flat element index into the
        global buffer of every box element, in-bounds mask); out-of-bounds indices are 0."""
        grids = np.meshgrid(*[np.arange(b, dtype=np.int64) for b in reversed(self.box)],
                            indexing="ij")
        flat = np.zeros(grids[0].shape, np.int64)
        ok = np.ones(grids[0].shape, bool)
        elem_strides = (1, *(s // self.itemsize for s in self.strides))
        for d in range(len(self.dims)):
            g = grids[len(self.dims) - 1 - d] + int(coords[d])
            ok &= (g >= 0) & (g < self.dims[d])
            flat += g * elem_strides[d]
        return np.where(ok, flat, 0).ravel(), ok.ravel()


def row_major_map(name: str, buffer: str, dtype: str, itemsize: int,
                  shape: tuple[int, ...], box: tuple[int, ...], swizzle_mode: int
                  ) -> TensorMap:
    """The map of a contiguous row-major tensor of `shape` (outermost first) with `box`
    (outermost first), as a lowering writes it."""
    dims = tuple(reversed(shape))
    strides, s = [], itemsize
    for d in dims[:-1]:
        s *= d
        strides.append(s)
    return TensorMap(name, buffer, dtype, itemsize, dims, tuple(strides),
                     tuple(reversed(box)), swizzle_mode)


__all__ = ["TensorMap", "TensorMapError", "row_major_map"]
