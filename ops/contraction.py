"""Contraction primitives: dot_general (XLA's general dot) and matmul.

dot_general's output dims come in XLA's order: batch dims (in lhs_batch
order), then the lhs free dims, then the rhs free dims, each in their original
order. Both operands must have the same dtype (insert a cast otherwise).
`acc_dtype` is the accumulator: None means f32 for floats narrower than 32
bits and the input dtype otherwise (`accumulation_dtype`). `out_dtype` is the
stored result dtype: None means the input dtype. The float64 reference
contracts exactly; the executor rounds to `out_dtype`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hal.dtypes import FLOAT_DTYPES, INT_DTYPES, DType, f32
from hal.errors import ShapeError
from hal.ir.types import TensorType

from .common import normalize_axis, require_dtype
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

NUMERIC = FLOAT_DTYPES + INT_DTYPES
ACCUMULATES = ErrorModel(ulps=0.5, accumulates=True)

_DTYPE_ATTRS = (
    AttrSpec("acc_dtype", "dtype", None,
             doc="accumulator dtype; default f32 for floats under 32 bits, else the input dtype"),
    AttrSpec("out_dtype", "dtype", None, doc="result dtype; default the input dtype"),
)


def accumulation_dtype(input_dtype: DType, attrs: Mapping[str, Any]) -> DType:
    """The dtype a contraction accumulates in (resolving acc_dtype=None)."""
    acc = attrs.get("acc_dtype")
    if acc is not None:
        return acc
    return f32 if input_dtype.is_float and input_dtype.bits < 32 else input_dtype


def _operand_dtype(op: str, a: TensorType, b: TensorType) -> DType:
    if a.dtype != b.dtype:
        raise ShapeError(f"{op}: lhs is {a.dtype} but rhs is {b.dtype}",
                         hint="insert a cast so both operands have the same dtype")
    require_dtype(op, a, NUMERIC, "numeric")
    return a.dtype


def _dims(op: str, what: str, dims: Sequence[int], rank: int) -> tuple[int, ...]:
    out = tuple(normalize_axis(d, rank, f"{op} ({what})") for d in dims)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated dimension in {what} {list(dims)}")
    return out


def dot_general_dims(a_rank: int, b_rank: int, attrs: Mapping[str, Any]):
    """Normalised (lhs_batch, rhs_batch, lhs_contract, rhs_contract, lhs_free, rhs_free)."""
    lb = _dims("dot_general", "lhs_batch", attrs["lhs_batch"], a_rank)
    rb = _dims("dot_general", "rhs_batch", attrs["rhs_batch"], b_rank)
    lc = _dims("dot_general", "lhs_contracting", attrs["lhs_contracting"], a_rank)
    rc = _dims("dot_general", "rhs_contracting", attrs["rhs_contracting"], b_rank)
    if set(lb) & set(lc) or set(rb) & set(rc):
        raise ShapeError("dot_general: a dimension is both a batch and a contracting dimension",
                         hint="each dimension is batch, contracting or free")
    if len(lb) != len(rb) or len(lc) != len(rc):
        raise ShapeError(f"dot_general: {len(lb)} lhs vs {len(rb)} rhs batch dims, "
                         f"{len(lc)} lhs vs {len(rc)} rhs contracting dims",
                         hint="batch and contracting dims pair up one to one")
    lf = tuple(i for i in range(a_rank) if i not in lb and i not in lc)
    rf = tuple(i for i in range(b_rank) if i not in rb and i not in rc)
    return lb, rb, lc, rc, lf, rf


def _dot_infer(types, attrs):
    a, b = types
    dt = _operand_dtype("dot_general", a, b)
    lb, rb, lc, rc, lf, rf = dot_general_dims(a.rank, b.rank, attrs)
    for kind, ld, rd in (("batch", lb, rb), ("contracting", lc, rc)):
        for i, j in zip(ld, rd, strict=True):
            if a.shape[i] != b.shape[j]:
                raise ShapeError(f"dot_general: lhs {kind} dim {i} has size {a.shape[i]} but rhs "
                                 f"{kind} dim {j} has size {b.shape[j]} "
                                 f"(lhs {list(a.shape)}, rhs {list(b.shape)})",
                                 hint=f"paired {kind} dims must have equal sizes")
    shape = [a.shape[i] for i in lb] + [a.shape[i] for i in lf] + [b.shape[i] for i in rf]
    return [TensorType(attrs["out_dtype"] or dt, tuple(shape))]


def dot_general_operands(a: np.ndarray, b: np.ndarray, attrs: Mapping[str, Any]
                         ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """dot_general as one batched matrix product: (a as [batch, M, K], b as [batch, K, N],
    the result's shape), the operands brought to (batch, free, contract) order."""
    lb, rb, lc, rc, lf, rf = dot_general_dims(a.ndim, b.ndim, attrs)
    at = np.transpose(a, lb + lf + lc)
    bt = np.transpose(b, rb + rc + rf)
    batch = at.shape[:len(lb)]
    lfree, rfree = at.shape[len(lb):len(lb) + len(lf)], bt.shape[len(rb) + len(rc):]
    k = math.prod(at.shape[len(lb) + len(lf):])
    a2 = at.reshape((math.prod(batch), math.prod(lfree), k))
    b2 = bt.reshape((math.prod(batch), k, math.prod(rfree)))
    return a2, b2, tuple(batch) + tuple(lfree) + tuple(rfree)


def _dot_ref(xs, attrs):
    # multiply exactly in float64/int64
    a2, b2, shape = dot_general_operands(xs[0], xs[1], attrs)
    with np.errstate(all="ignore"):  # inf * 0 -> nan is the answer, not a problem
        out = np.matmul(a2, b2)
    return [out.reshape(shape)]


register_op(OpDef(
    "dot_general", Category.CONTRACTION, ("lhs", "rhs"), _dot_infer, _dot_ref,
    attrs=(AttrSpec("lhs_contracting", "ints", doc="lhs dims summed over"),
           AttrSpec("rhs_contracting", "ints", doc="rhs dims summed over, paired with lhs's"),
           AttrSpec("lhs_batch", "ints", (), doc="lhs batch dims"),
           AttrSpec("rhs_batch", "ints", (), doc="rhs batch dims, paired with lhs's"))
    + _DTYPE_ATTRS,
    error=ACCUMULATES, dtypes=tuple(d.name for d in NUMERIC),
    doc="general tensor contraction; output dims: batch, lhs free, rhs free"))


# -- matmul --------------------------------------------------------------------

def _matmul_infer(types, attrs):
    a, b = types
    dt = _operand_dtype("matmul", a, b)
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul: operands need rank >= 2, got {list(a.shape)} and "
                         f"{list(b.shape)}", hint="reshape vectors to [1, n] or [n, 1]")
    if a.rank != b.rank or a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"matmul: batch dims differ: {list(a.shape)} vs {list(b.shape)}",
                         hint="matmul does not broadcast; insert broadcast_to on the batch dims")
    m, ka = (a.shape[-1], a.shape[-2]) if attrs["transpose_a"] else a.shape[-2:]
    kb, n = (b.shape[-1], b.shape[-2]) if attrs["transpose_b"] else b.shape[-2:]
    if ka != kb:
        raise ShapeError(f"matmul: contracting sizes differ: lhs {list(a.shape)} gives {ka}, "
                         f"rhs {list(b.shape)} gives {kb} (transpose_a={attrs['transpose_a']}, "
                         f"transpose_b={attrs['transpose_b']})",
                         hint="check the operand layout or the transpose flags")
    return [TensorType(attrs["out_dtype"] or dt, tuple(a.shape[:-2]) + (m, n))]


def _matmul_ref(xs, attrs):
    a, b = xs
    if attrs["transpose_a"]:
        a = np.swapaxes(a, -1, -2)
    if attrs["transpose_b"]:
        b = np.swapaxes(b, -1, -2)
    with np.errstate(all="ignore"):
        return [np.matmul(a, b)]


register_op(OpDef(
    "matmul", Category.CONTRACTION, ("a", "b"), _matmul_infer, _matmul_ref,
    attrs=(AttrSpec("transpose_a", "bool", False, doc="use a's last two dims swapped"),
           AttrSpec("transpose_b", "bool", False, doc="use b's last two dims swapped"))
    + _DTYPE_ATTRS,
    error=ACCUMULATES, dtypes=tuple(d.name for d in NUMERIC),
    doc="batched a @ b for rank >= 2 with equal batch dims (no implicit broadcasting)"))


# --------------------------------------------------------------------------- graph facts
# Facts about a contraction node, defined once here and read by the lowering, the fusion
# cost model and the conformance tolerances.

_DIMS: dict[tuple, tuple] = {}   # dot_general dims by (ranks, dimension numbers)


def contraction_dims(node) -> tuple[tuple[int, ...], ...]:
    """(lhs_batch, rhs_batch, lhs_contract, rhs_contract, lhs_free, rhs_free) of a
    dot_general or matmul node."""
    a, b = node.inputs
    if node.op == "matmul":
        ra, rb = a.rank, b.rank
        batch = tuple(range(ra - 2))
        lc, lf = (ra - 2, ra - 1) if node.attrs["transpose_a"] else (ra - 1, ra - 2)
        rc, rf = (rb - 1, rb - 2) if node.attrs["transpose_b"] else (rb - 2, rb - 1)
        return batch, tuple(range(rb - 2)), (lc,), (rc,), (lf,), (rf,)
    key = (a.rank, b.rank, node.attrs.get("lhs_contracting"), node.attrs.get("rhs_contracting"),
           node.attrs.get("lhs_batch"), node.attrs.get("rhs_batch"))
    dims = _DIMS.get(key)
    if dims is None:
        dims = _DIMS[key] = dot_general_dims(a.rank, b.rank, node.attrs)
    return dims


def contraction_mnk(node) -> tuple[int, int, int]:
    """(M, N, K) of a contraction: lhs free, rhs free and contracted extents (batch aside)."""
    a, b = node.inputs
    _lb, _rb, lc, _rc, lf, rf = contraction_dims(node)
    return (math.prod(a.shape[i] for i in lf), math.prod(b.shape[j] for j in rf),
            math.prod(a.shape[i] for i in lc))


def contraction_length(node) -> int:
    """K: how many products each output element of a contraction sums."""
    return int(contraction_mnk(node)[2])
