"""Data-movement primitives: broadcast_to, reshape, transpose, slice, pad, concat.

All of them move values without arithmetic, so their error model is exact.
squeeze and expand_dims are not separate ops: frontends express them with
reshape. Broadcasting is never implicit anywhere in hal; broadcast_to is the
one op that replicates data, following NumPy's rule (align shapes on the right;
a source dim must be 1 or equal to the target dim; new dims lead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hal.dtypes import DTYPES
from hal.errors import ShapeError
from hal.ir.types import Dim, TensorType

from .common import normalize_axis
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

ALL_DTYPES = tuple(DTYPES)
EXACT = ErrorModel(ulps=0)


def _check_dims(op: str, shape: Sequence[Any], what: str = "shape") -> tuple[Dim, ...]:
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and d < 0):
            raise ShapeError(f"{op}: {what} {list(shape)} has a bad dimension {d!r}",
                             hint="dimensions are non-negative ints")
    return tuple(shape)


# -- broadcast_to --------------------------------------------------------------

def broadcast_shape_check(op: str, src: Sequence[Dim], target: Sequence[Dim]) -> None:
    """Raise ShapeError unless `src` broadcasts to `target` under NumPy's rule."""
    if len(src) > len(target):
        raise ShapeError(f"{op}: cannot broadcast shape {list(src)} to {list(target)}: "
                         f"the target has fewer dimensions",
                         hint="reshape to drop size-1 dims first")
    offset = len(target) - len(src)
    for i, d in enumerate(src):
        if d != 1 and d != target[offset + i]:
            raise ShapeError(f"{op}: cannot broadcast shape {list(src)} to {list(target)}: "
                             f"dim {i} is {d}, target dim {offset + i} is {target[offset + i]}",
                             hint="source dims must be 1 or equal to the target dim "
                                  "(shapes align on the right)")


def _broadcast_infer(types, attrs):
    shape = _check_dims("broadcast_to", attrs["shape"])
    broadcast_shape_check("broadcast_to", types[0].shape, shape)
    return [types[0].with_shape(shape)]


register_op(OpDef(
    "broadcast_to", Category.BROADCAST, ("x",), _broadcast_infer,
    lambda xs, attrs: [np.broadcast_to(xs[0], attrs["shape"]).copy()],
    attrs=(AttrSpec("shape", "ints", doc="the target shape, e.g. shape=[4, 8]"),),
    error=EXACT, dtypes=ALL_DTYPES,
    doc="replicate x to `shape` (NumPy rule: align right, size-1 or new leading dims)"))


# -- reshape -------------------------------------------------------------------

def resolve_reshape(op: str, src: Sequence[Dim], shape: Sequence[int]) -> tuple[Dim, ...]:
    """The target shape of reshape with its one allowed -1 filled in."""
    if sum(1 for d in shape if d == -1) > 1:
        raise ShapeError(f"{op}: shape {list(shape)} has more than one -1",
                         hint="at most one dimension may be inferred")
    _check_dims(op, [d for d in shape if d != -1])
    if all(isinstance(d, int) for d in src) and all(isinstance(d, int) for d in shape):
        total = math.prod(src)
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if known == 0 or total % known:
                raise ShapeError(f"{op}: cannot reshape {list(src)} ({total} elements) "
                                 f"to {list(shape)}",
                                 hint="-1 needs the other dims to divide the element count")
            return tuple(total // known if d == -1 else d for d in shape)
        if known != total:
            raise ShapeError(f"{op}: cannot reshape {list(src)} ({total} elements) to "
                             f"{list(shape)} ({known} elements)",
                             hint="the element count must stay the same")
        return tuple(shape)
    # Symbolic dims: accept only adding or removing size-1 dims, which we can prove.
    if -1 in shape or [d for d in src if d != 1] != [d for d in shape if d != 1]:
        raise ShapeError(f"{op}: cannot prove that {list(src)} and {list(shape)} have the "
                         f"same element count", hint="bind symbolic dims to ints before reshaping")
    return tuple(shape)


def _reshape_infer(types, attrs):
    return [types[0].with_shape(resolve_reshape("reshape", types[0].shape, attrs["shape"]))]


def _reshape_ref(xs, attrs):
    return [np.reshape(xs[0], resolve_reshape("reshape", xs[0].shape, attrs["shape"])).copy()]


register_op(OpDef(
    "reshape", Category.MOVEMENT, ("x",), _reshape_infer, _reshape_ref,
    attrs=(AttrSpec("shape", "ints", doc="the new shape; one dim may be -1"),),
    error=EXACT, dtypes=ALL_DTYPES,
    doc="same elements in row-major order, new shape (also squeeze / expand_dims)"))


# -- transpose -----------------------------------------------------------------

def _transpose_infer(types, attrs):
    t, perm = types[0], attrs["perm"]
    if sorted(perm) != list(range(t.rank)):
        raise ShapeError(f"transpose: perm {list(perm)} is not a permutation of "
                         f"{list(range(t.rank))} for rank {t.rank}",
                         hint="list every axis exactly once")
    return [t.with_shape(t.shape[p] for p in perm)]


register_op(OpDef(
    "transpose", Category.MOVEMENT, ("x",), _transpose_infer,
    lambda xs, attrs: [np.transpose(xs[0], attrs["perm"]).copy()],
    attrs=(AttrSpec("perm", "ints", doc="output axis i is input axis perm[i]"),),
    error=EXACT, dtypes=ALL_DTYPES, doc="permute axes: out.shape[i] = x.shape[perm[i]]"))


# -- slice ---------------------------------------------------------------------

def slice_bounds(shape: Sequence[Dim], attrs: Mapping[str, Any]) -> list[tuple[int, int, int, int]]:
    """(axis, start, step, length) per sliced axis, starts/stops normalised Python-style."""
    starts, stops, steps, axes = attrs["starts"], attrs["stops"], attrs["steps"], attrs["axes"]
    rank = len(shape)
    if not len(starts) == len(stops) == len(steps):
        raise ShapeError(f"slice: starts, stops and steps have lengths {len(starts)}, "
                         f"{len(stops)}, {len(steps)}", hint="give one of each per sliced axis")
    if axes is None:
        axes = tuple(range(len(starts)))
    if len(axes) != len(starts):
        raise ShapeError(f"slice: {len(axes)} axes but {len(starts)} starts",
                         hint="give one start/stop/step per axis")
    if len(starts) > rank:
        raise ShapeError(f"slice: {len(starts)} sliced axes for a rank-{rank} operand")
    norm = [normalize_axis(a, rank, "slice") for a in axes]
    if len(set(norm)) != len(norm):
        raise ShapeError(f"slice: repeated axis in {list(axes)}")
    out = []
    for axis, start, stop, step in zip(norm, starts, stops, steps, strict=True):
        if step <= 0:
            raise ShapeError(f"slice: step {step} on axis {axis} is not positive",
                             hint="only positive steps are supported; reverse with a gather")
        dim = shape[axis]
        if not isinstance(dim, int):
            raise ShapeError(f"slice: axis {axis} has symbolic size {dim}",
                             hint="bind symbolic dims to ints before slicing")
        lo, hi, _ = slice(start, stop, step).indices(dim)
        out.append((axis, lo, step, len(range(lo, hi, step))))
    return out


def _slice_infer(types, attrs):
    shape = list(types[0].shape)
    for axis, _start, _step, length in slice_bounds(shape, attrs):
        shape[axis] = length
    return [types[0].with_shape(shape)]


def _slice_ref(xs, attrs):
    index = [slice(None)] * xs[0].ndim
    for axis, start, step, length in slice_bounds(xs[0].shape, attrs):
        index[axis] = slice(start, start + step * length, step) if length else slice(0, 0)
    return [xs[0][tuple(index)].copy()]


register_op(OpDef(
    "slice", Category.MOVEMENT, ("x",), _slice_infer, _slice_ref,
    attrs=(AttrSpec("starts", "ints", doc="first index per axis (negative counts from the end)"),
           AttrSpec("stops", "ints", doc="end index per axis, exclusive (clamped like Python)"),
           AttrSpec("steps", "ints", doc="positive stride per axis"),
           AttrSpec("axes", "ints", None, doc="sliced axes; default the leading ones")),
    error=EXACT, dtypes=ALL_DTYPES,
    doc="x[start:stop:step] along `axes` with Python semantics (positive steps only)"))


# -- pad -----------------------------------------------------------------------

def _pad_infer(types, attrs):
    t, low, high = types[0], attrs["low"], attrs["high"]
    if len(low) != t.rank or len(high) != t.rank:
        raise ShapeError(f"pad: low has {len(low)} and high {len(high)} entries for a "
                         f"rank-{t.rank} operand", hint="give one low and one high pad per axis")
    if any(p < 0 for p in low + high):
        raise ShapeError(f"pad: negative padding low={list(low)} high={list(high)}",
                         hint="use slice to remove elements")
    shape = []
    for d, lo, hi in zip(t.shape, low, high, strict=True):
        if not isinstance(d, int) and (lo or hi):
            raise ShapeError(f"pad: cannot pad symbolic dim {d}",
                             hint="bind symbolic dims to ints first")
        shape.append(d + lo + hi if isinstance(d, int) else d)
    return [t.with_shape(shape)]


def _pad_ref(xs, attrs):
    x = xs[0]
    if x.ndim == 0:
        return [x.copy()]
    width = list(zip(attrs["low"], attrs["high"], strict=True))
    value = attrs["value"]
    if x.dtype == np.bool_:
        value = bool(value)
    elif x.dtype.kind in "iu":
        value = int(value)
    return [np.pad(x, width, mode="constant", constant_values=value)]


register_op(OpDef(
    "pad", Category.MOVEMENT, ("x",), _pad_infer, _pad_ref,
    attrs=(AttrSpec("low", "ints", doc="elements added before each axis (>= 0)"),
           AttrSpec("high", "ints", doc="elements added after each axis (>= 0)"),
           AttrSpec("value", "float", 0.0, doc="the fill value (cast to x's dtype)")),
    error=EXACT, dtypes=ALL_DTYPES, doc="constant padding; value is rounded to x's dtype"))


# -- concat --------------------------------------------------------------------

def _concat_infer(types: Sequence[TensorType], attrs):
    first = types[0]
    axis = normalize_axis(attrs["axis"], first.rank, "concat")
    if first.rank == 0:
        raise ShapeError("concat: operands are scalars", hint="reshape to shape [1] first")
    total: Dim = 0
    for i, t in enumerate(types):
        if t.dtype != first.dtype:
            raise ShapeError(f"concat: operand {i} is {t.dtype}, operand 0 is {first.dtype}",
                             hint="insert a cast")
        if t.rank != first.rank:
            raise ShapeError(f"concat: operand {i} has rank {t.rank}, operand 0 has {first.rank}",
                             hint="reshape the operands to the same rank")
        for ax, (d, d0) in enumerate(zip(t.shape, first.shape, strict=True)):
            if ax != axis and d != d0:
                raise ShapeError(f"concat: operand {i} has shape {list(t.shape)}, operand 0 "
                                 f"{list(first.shape)}; they differ on axis {ax}, not only on "
                                 f"the concat axis {axis}", hint="broadcast or slice first")
        d = t.shape[axis]
        if isinstance(total, int) and isinstance(d, int):
            total += d
        else:
            raise ShapeError(f"concat: symbolic size on concat axis {axis}",
                             hint="bind symbolic dims to ints first")
    shape = list(first.shape)
    shape[axis] = total
    return [first.with_shape(shape)]


def _concat_ref(xs, attrs):
    return [np.concatenate(xs, axis=normalize_axis(attrs["axis"], xs[0].ndim, "concat"))]


register_op(OpDef(
    "concat", Category.MOVEMENT, ("*xs",), _concat_infer, _concat_ref,
    attrs=(AttrSpec("axis", "int", doc="the axis the operands are joined on"),),
    error=EXACT, dtypes=ALL_DTYPES,
    doc="join operands along `axis`; all other dims and the dtype must agree"))
