"""Source primitives with no tensor operands: iota and full.

iota follows XLA: the values count 0, 1, 2, ... along `dimension` and are
constant along every other dimension. full fills a shape with one scalar (the
only op whose attribute is a tensor value); the value is rounded to `dtype`
by hal's cast rules (fp8 saturates, float -> int truncates).
"""

from __future__ import annotations

import numpy as np

from hal.dtypes import DTYPES, cast
from hal.errors import ShapeError
from hal.ir.types import TensorType

from .common import normalize_axis
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

ALL_DTYPES = tuple(DTYPES)


def _static_shape(op: str, shape) -> tuple[int, ...]:
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ShapeError(f"{op}: shape {list(shape)} has a bad dimension {d!r}",
                             hint="dimensions are non-negative ints")
    return tuple(shape)


def _wide(values: np.ndarray, dt) -> np.ndarray:
    """Values in the reference's working type: float64, int64 or bool."""
    if dt.is_float:
        return np.asarray(values, dtype=np.float64)
    if dt.is_bool:
        return cast(values, dt)
    return cast(values, dt).astype(np.int64)


def _iota_infer(types, attrs):
    shape = _static_shape("iota", attrs["shape"])
    if not shape:
        raise ShapeError("iota: shape is empty (a scalar)", hint="give iota rank >= 1")
    normalize_axis(attrs["dimension"], len(shape), "iota")
    if attrs["dtype"].is_bool:
        raise ShapeError("iota: dtype bool cannot count", hint="use an integer or float dtype")
    return [TensorType(attrs["dtype"], shape)]


def _iota_ref(xs, attrs):
    shape = tuple(attrs["shape"])
    dim = normalize_axis(attrs["dimension"], len(shape), "iota")
    # Integer iotas count in the integer type and wrap past its range (as XLA's iota and
    # the kernels do); float iotas count exactly in float64 and round on storage.
    counts = np.arange(shape[dim], dtype=np.int64 if attrs["dtype"].is_int else np.float64)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return [_wide(np.broadcast_to(counts.reshape(view), shape).copy(), attrs["dtype"])]


register_op(OpDef(
    "iota", Category.SOURCE, (), _iota_infer, _iota_ref,
    attrs=(AttrSpec("shape", "ints", doc="output shape"),
           AttrSpec("dimension", "int", doc="the axis along which values count 0, 1, ..."),
           AttrSpec("dtype", "dtype", doc="output dtype (integer or float)")),
    error=ErrorModel(ulps=0), dtypes=ALL_DTYPES,
    doc="XLA iota: out[i0, .., in] = i_dimension"))


def _full_infer(types, attrs):
    return [TensorType(attrs["dtype"], _static_shape("full", attrs["shape"]))]


def _full_ref(xs, attrs):
    value = np.full(tuple(attrs["shape"]), float(attrs["value"]), dtype=np.float64)
    return [_wide(value, attrs["dtype"])]


register_op(OpDef(
    "full", Category.SOURCE, (), _full_infer, _full_ref,
    attrs=(AttrSpec("shape", "ints", doc="output shape; () for a scalar"),
           AttrSpec("value", "float", doc="the fill value (may be inf or nan)"),
           AttrSpec("dtype", "dtype", doc="output dtype")),
    error=ErrorModel(ulps=0), dtypes=ALL_DTYPES,
    doc="a tensor of `shape` filled with `value`, rounded to `dtype`"))
