"""Scan primitives: cumsum along one axis (inclusive or exclusive, forward or reverse).

The output dtype equals the input dtype; like reductions, 16-bit floats
accumulate in f32 in the lowering. Element i of an inclusive forward cumsum
sums i + 1 terms, which the accumulating error model accounts for.
"""

from __future__ import annotations

import numpy as np

from hal.dtypes import FLOAT_DTYPES, INT_DTYPES
from hal.errors import ShapeError

from .common import normalize_axis, require_dtype
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

NUMERIC = FLOAT_DTYPES + INT_DTYPES


def _cumsum_infer(types, attrs):
    t = types[0]
    require_dtype("cumsum", t, NUMERIC, "numeric")
    if t.rank == 0:
        raise ShapeError("cumsum: operand is a scalar", hint="reshape to shape [1] first")
    normalize_axis(attrs["axis"], t.rank, "cumsum")
    return [t]


def _cumsum_ref(xs, attrs):
    x = xs[0]
    axis = normalize_axis(attrs["axis"], x.ndim, "cumsum")
    if attrs["reverse"]:
        x = np.flip(x, axis)
    with np.errstate(all="ignore"):
        out = np.cumsum(x, axis=axis)
    if attrs["exclusive"]:
        # Shift by one: element i sums the terms before i; element 0 is 0.
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)),
                              np.take(out, np.arange(out.shape[axis] - 1), axis=axis)],
                             axis=axis) if out.shape[axis] else out
    if attrs["reverse"]:
        out = np.flip(out, axis)
    return [np.ascontiguousarray(out)]


register_op(OpDef(
    "cumsum", Category.SCAN, ("x",), _cumsum_infer, _cumsum_ref,
    attrs=(AttrSpec("axis", "int", doc="the scanned axis"),
           AttrSpec("reverse", "bool", False, doc="scan from the last element to the first"),
           AttrSpec("exclusive", "bool", False, doc="element i excludes term i (starts at 0)")),
    error=ErrorModel(ulps=0.5, accumulates=True), dtypes=tuple(d.name for d in NUMERIC),
    doc="cumulative sum along axis"))
