"""Reduction primitives: reduce_sum/prod/max/min/any/all and argmax/argmin.

Reductions combine a tensor along `axes` (default: all of them), dropping the
reduced axes unless keepdims. The result dtype equals the input dtype for
sum/prod/max/min; the lowering accumulates 16-bit and fp8 floats in f32 and
rounds once at the end, which is what the error model assumes (one rounding
per term of f32, plus the final rounding to storage).

Empty reductions: sum gives 0, prod 1, any False, all True; max and min have
no identity, so reducing over an empty axis is a ShapeError. Sums start from
+0, so a sum of -0.0s is +0.0 (as in torch and the kernels). NaN propagates
through max and min; argmax/argmin treat NaN as both the maximum and the
minimum (the first NaN wins), like torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from hal.dtypes import FLOAT_DTYPES, INT_DTYPES, bool_, i32
from hal.errors import ShapeError
from hal.ir.types import TensorType

from .common import normalize_axes, normalize_axis, require_dtype
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

NUMERIC = FLOAT_DTYPES + INT_DTYPES
EXACT = ErrorModel(ulps=0)
ACCUMULATES = ErrorModel(ulps=0.5, accumulates=True)

_REDUCE_ATTRS = (
    AttrSpec("axes", "ints", None, doc="reduced axes (negative allowed); default all axes"),
    AttrSpec("keepdims", "bool", False, doc="keep reduced axes as size 1"),
)


def reduced_shape(shape, axes: tuple[int, ...], keepdims: bool) -> tuple:
    """The shape after reducing normalised `axes`."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduction(name: str, fn, dtypes, error: ErrorModel, needs_identity: bool, doc: str):
    def infer(types, attrs):
        t = types[0]
        require_dtype(name, t, dtypes, "supported")
        axes = normalize_axes(attrs["axes"], t.rank, name)
        if needs_identity and any(t.shape[a] == 0 for a in axes):
            raise ShapeError(f"{name}: reduces over an empty axis of shape {list(t.shape)}; "
                             f"{name} has no identity",
                             hint="slice or pad so the reduced axes are non-empty")
        return [t.with_shape(reduced_shape(t.shape, axes, attrs["keepdims"]))]

    def reference(xs, attrs):
        x = xs[0]
        axes = normalize_axes(attrs["axes"], x.ndim, name)
        with np.errstate(all="ignore"):
            return [np.asarray(fn(x, axis=axes, keepdims=attrs["keepdims"]))]

    register_op(OpDef(name, Category.REDUCTION, ("x",), infer, reference,
                      attrs=_REDUCE_ATTRS, error=error,
                      dtypes=tuple(d.name for d in dtypes), doc=doc))


_reduction("reduce_sum", np.sum, NUMERIC, ACCUMULATES, False,
           "sum over axes (empty sum = 0); 16-bit floats accumulate in f32")
_reduction("reduce_prod", np.prod, NUMERIC, ACCUMULATES, False,
           "product over axes (empty product = 1); 16-bit floats accumulate in f32")
_reduction("reduce_max", np.max, NUMERIC, EXACT, True,
           "maximum over axes, NaN-propagating; empty axes are an error")
_reduction("reduce_min", np.min, NUMERIC, EXACT, True,
           "minimum over axes, NaN-propagating; empty axes are an error")
_reduction("reduce_any", np.any, (bool_,), EXACT, False, "logical or over axes (empty = False)")
_reduction("reduce_all", np.all, (bool_,), EXACT, False, "logical and over axes (empty = True)")


# -- argmax / argmin -----------------------------------------------------------

def _arg_reduction(name: str, fn, doc: str):
    def infer(types, attrs: Mapping[str, Any]) -> list[TensorType]:
        t = types[0]
        require_dtype(name, t, NUMERIC, "numeric")
        if t.rank == 0:
            raise ShapeError(f"{name}: operand is a scalar", hint="reshape to shape [1] first")
        axis = normalize_axis(attrs["axis"], t.rank, name)
        if t.shape[axis] == 0:
            raise ShapeError(f"{name}: axis {axis} of shape {list(t.shape)} is empty",
                             hint="an empty axis has no extreme element")
        out = attrs["dtype"]
        if out is None or not out.is_int:
            raise ShapeError(f"{name}: index dtype {out} is not an integer type",
                             hint="use dtype=i32 or dtype=i64")
        return [TensorType(out, reduced_shape(t.shape, (axis,), attrs["keepdims"]))]

    def reference(xs, attrs):
        x = xs[0]
        axis = normalize_axis(attrs["axis"], x.ndim, name)
        # NumPy's argmax/argmin return the first NaN, like torch: NaN is the extreme.
        idx = fn(x, axis=axis, keepdims=attrs["keepdims"])
        return [np.asarray(idx, dtype=np.int64)]

    register_op(OpDef(
        name, Category.REDUCTION, ("x",), infer, reference,
        attrs=(AttrSpec("axis", "int", doc="the one reduced axis"),
               AttrSpec("keepdims", "bool", False, doc="keep the axis as size 1"),
               AttrSpec("dtype", "dtype", i32, doc="integer dtype of the indices")),
        error=EXACT, dtypes=tuple(d.name for d in NUMERIC), doc=doc))


_arg_reduction("argmax", np.argmax,
               "index of the first maximum along axis (NaN counts as the maximum)")
_arg_reduction("argmin", np.argmin,
               "index of the first minimum along axis (NaN counts as the minimum)")


# --------------------------------------------------------------------------- graph facts

def reduction_axes(node) -> tuple[int, ...]:
    """The normalised, sorted axes a reduction node (reduce_* or argmax/argmin) combines."""
    rank = node.inputs[0].rank
    if "axis" in node.attrs:
        return (node.attrs["axis"] % rank,) if rank else ()
    axes = node.attrs.get("axes")
    if axes is None:
        return tuple(range(rank))
    return tuple(sorted(a % rank for a in axes))


def reduction_length(node) -> int:
    """How many elements each output element of a reduction combines."""
    x = node.inputs[0]
    return math.prod(x.shape[a] for a in reduction_axes(node))
