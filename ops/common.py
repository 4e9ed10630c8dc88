"""Shape and dtype rules shared by many ops."""

from __future__ import annotations

from collections.abc import Sequence

from hal.dtypes import DType
from hal.errors import ShapeError
from hal.ir.types import TensorType


def normalize_axis(axis: int, rank: int, op: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}",
                         hint=f"use an axis in [{-rank}, {rank - 1}]")
    return axis % rank


def normalize_axes(axes: Sequence[int] | None, rank: int, op: str) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    out = tuple(normalize_axis(a, rank, op) for a in axes)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def same_types(op: str, types: Sequence[TensorType]) -> TensorType:
    """Elementwise operands must agree exactly in shape and dtype (broadcasts are explicit)."""
    first = types[0]
    for i, t in enumerate(types[1:], 1):
        if t.shape != first.shape:
            raise ShapeError(f"{op}: operand {i} has shape {list(t.shape)}, operand 0 has "
                             f"{list(first.shape)}",
                             hint="insert broadcast_to; elementwise ops do not broadcast implicitly")
        if t.dtype != first.dtype:
            raise ShapeError(f"{op}: operand {i} is {t.dtype}, operand 0 is {first.dtype}",
                             hint="insert a cast")
    return first


def require_dtype(op: str, t: TensorType, allowed: Sequence[DType], what: str) -> None:
    if t.dtype not in allowed:
        raise ShapeError(f"{op}: operand dtype {t.dtype} is not {what}",
                         hint="allowed: " + ", ".join(d.name for d in allowed))
