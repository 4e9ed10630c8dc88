"""Data-dependent indexing: gather (np.take along one axis) and take_along_axis.

Indices are integer tensors whose values must lie in [0, dim) of the indexed
axis; negative or too-large indices are a user error, and the reference raises
HalError naming the first bad index (kernels do not check, so an out-of-range
index on a device reads or faults unpredictably). ShapeError is reserved for
static shape and dtype problems.
"""

from __future__ import annotations

import numpy as np

from hal.dtypes import DTYPES, INT_DTYPES
from hal.errors import HalError, ShapeError
from hal.ir.types import TensorType

from .common import normalize_axis, require_dtype
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

ALL_DTYPES = tuple(DTYPES)


def check_indices(op: str, indices: np.ndarray, dim: int, axis: int) -> np.ndarray:
    """Raise HalError unless every index is in [0, dim); return them as int64."""
    idx = np.asarray(indices).astype(np.int64)
    bad = (idx < 0) | (idx >= dim)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise HalError(f"{op}: index {int(idx[where])} at position {list(where)} is out of "
                       f"range for axis {axis} of size {dim}",
                       hint=f"indices must lie in [0, {dim})")
    return idx


def _gather_infer(types, attrs):
    table, indices = types
    require_dtype("gather", indices, INT_DTYPES, "an integer type (indices)")
    if table.rank == 0:
        raise ShapeError("gather: table is a scalar", hint="gather indexes a tensor of rank >= 1")
    axis = normalize_axis(attrs["axis"], table.rank, "gather")
    shape = table.shape[:axis] + indices.shape + table.shape[axis + 1:]
    return [TensorType(table.dtype, shape)]


def _gather_ref(xs, attrs):
    table, indices = xs
    axis = normalize_axis(attrs["axis"], table.ndim, "gather")
    idx = check_indices("gather", indices, table.shape[axis], axis)
    return [np.take(table, idx, axis=axis)]


register_op(OpDef(
    "gather", Category.GATHER, ("table", "indices"), _gather_infer, _gather_ref,
    attrs=(AttrSpec("axis", "int", 0, doc="the indexed axis of table"),),
    error=ErrorModel(ulps=0), dtypes=ALL_DTYPES,
    doc="np.take(table, indices, axis): out = table[..., indices, ...]; embedding lookup "
        "with table [V, D] and indices [...] gives [..., D]. Indices must be in range."))


def _take_infer(types, attrs):
    x, indices = types
    require_dtype("take_along_axis", indices, INT_DTYPES, "an integer type (indices)")
    axis = normalize_axis(attrs["axis"], x.rank, "take_along_axis")
    if x.rank == 0 or indices.rank != x.rank:
        raise ShapeError(f"take_along_axis: indices have rank {indices.rank}, x has rank {x.rank}",
                         hint="indices need x's rank (reshape them)")
    for i, (d, di) in enumerate(zip(x.shape, indices.shape, strict=True)):
        if i != axis and d != di:
            raise ShapeError(f"take_along_axis: indices shape {list(indices.shape)} differs from "
                             f"x shape {list(x.shape)} on axis {i} (not the take axis {axis})",
                             hint="insert broadcast_to on the indices")
    return [TensorType(x.dtype, indices.shape)]


def _take_ref(xs, attrs):
    x, indices = xs
    axis = normalize_axis(attrs["axis"], x.ndim, "take_along_axis")
    idx = check_indices("take_along_axis", indices, x.shape[axis], axis)
    return [np.take_along_axis(x, idx, axis=axis)]


register_op(OpDef(
    "take_along_axis", Category.GATHER, ("x", "indices"), _take_infer, _take_ref,
    attrs=(AttrSpec("axis", "int", doc="the indexed axis"),),
    error=ErrorModel(ulps=0), dtypes=ALL_DTYPES,
    doc="np.take_along_axis: out[..i..] = x[..indices[..i..]..] along axis; indices have "
        "x's shape except along axis. Indices must be in range."))
