"""ATen converters for tensor plumbing: views, slicing, joining, indexing, sources, no-ops.

Views (view, expand, permute, slice, select, unsqueeze, ...) become hal's
movement ops: reshape, broadcast_to, transpose, slice. Advanced indexing
(index.Tensor, embedding, index_select, gather) becomes gather or
take_along_axis; negative indices wrap as in torch. Factories (arange, full,
zeros, scalar_tensor, ...) become iota and full. Ops that only exist for
torch's bookkeeping (_assert_tensor_metadata, detach, clone, alias) vanish.
"""

from __future__ import annotations

import math
from typing import Any

from hal.dtypes import bool_, i64
from hal.errors import UnsupportedError
from hal.frontends.torch_convert import TorchContext, converts, static_shape
from hal.ir.graph import Value

# -- no-ops and copies ---------------------------------------------------------

@converts("aten._assert_tensor_metadata", "aten._assert_async", "aten._assert_scalar",
          "aten.sym_constrain_range_for_size", "aten.sym_constrain_range")
def _assert(cx: TorchContext, *args: Any, **kwargs: Any) -> None:
    return None


@converts("aten.clone", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.contiguous",
          "aten._to_copy", "aten.to", "aten.type_as", "aten.lift_fresh")
def _copy(cx: TorchContext, x: Any, *args: Any, **kwargs: Any) -> Value:
    return cx.tensor(x, cx.out_dtype())  # the driver casts to torch's dtype


@converts("aten.copy")
def _copy_into(cx: TorchContext, dst: Value, src: Any, non_blocking: bool = False) -> Value:
    return cx.tensor(src, cx.out_dtype(), cx.out_shape())


@converts("getitem")
def _getitem(cx: TorchContext, seq: Any, index: int) -> Any:
    return seq[index]


@converts("aten.sym_size")
def _sym_size(cx: TorchContext, x: Value, dim: int) -> int:
    return static_shape(x.shape, cx.node)[dim]


# -- views ---------------------------------------------------------------------

@converts("aten.view", "aten._unsafe_view", "aten.reshape", "aten.view_copy",
          "aten.unsqueeze", "aten.squeeze", "aten.flatten", "aten.unflatten")
def _reshape(cx: TorchContext, x: Value, *args: Any, **kwargs: Any) -> Value:
    return cx.reshape(x, cx.out_shape())


@converts("aten.expand", "aten.expand_copy", "aten.broadcast_to", "aten.expand_as")
def _expand(cx: TorchContext, x: Value, *args: Any, **kwargs: Any) -> Value:
    return cx.bcast(x, cx.out_shape())


@converts("aten.permute", "aten.permute_copy")
def _permute(cx: TorchContext, x: Value, dims: Any) -> Value:
    perm = tuple(d % x.rank for d in dims)
    return x if perm == tuple(range(x.rank)) else cx.op("transpose", x, perm=perm)


@converts("aten.t", "aten.transpose", "aten.numpy_T")
def _transpose(cx: TorchContext, x: Value, d0: int = 0, d1: int = 1) -> Value:
    if x.rank < 2:
        return x
    perm = list(range(x.rank))
    a, b = d0 % x.rank, d1 % x.rank
    perm[a], perm[b] = perm[b], perm[a]
    return _permute(cx, x, perm)


def _slice(cx: TorchContext, x: Value, dim: int, start: Any, end: Any, step: int = 1) -> Value:
    dim %= x.rank
    size = x.shape[dim]
    start = 0 if start is None else int(start)
    end = size if end is None else int(end)
    lo, hi, _ = slice(start, end, step).indices(size)
    if (lo, hi, step) == (0, size, 1):
        return x
    hi = max(hi, lo)
    return cx.op("slice", x, starts=(lo,), stops=(hi,), steps=(int(step),), axes=(dim,))


@converts("aten.slice", "aten.slice_copy")
def _slice_conv(cx: TorchContext, x: Value, dim: int = 0, start: Any = None, end: Any = None,
                step: int = 1) -> Value:
    return _slice(cx, x, dim, start, end, step)


@converts("aten.select", "aten.select_copy")
def _select(cx: TorchContext, x: Value, dim: int, index: int) -> Value:
    dim %= x.rank
    index %= x.shape[dim]
    return cx.reshape(_slice(cx, x, dim, index, index + 1), cx.out_shape())


@converts("aten.split_with_sizes", "aten.split", "aten.split_with_sizes_copy",
          "aten.unbind", "aten.chunk")
def _split(cx: TorchContext, x: Value, sizes: Any = None, dim: int = 0) -> tuple[Value, ...]:
    name = cx.node.target.__name__
    if name.startswith("unbind"):
        dim = (sizes or 0) % x.rank
        return tuple(cx.reshape(_slice(cx, x, dim, i, i + 1), cx.out_shape(i))
                     for i in range(x.shape[dim]))
    dim %= x.rank
    outs, start = [], 0
    for i in range(len(cx.out)):
        n = cx.out_shape(i)[dim]
        outs.append(_slice(cx, x, dim, start, start + n))
        start += n
    return tuple(outs)


@converts("aten.cat", "aten.concat")
def _cat(cx: TorchContext, tensors: Any, dim: int = 0) -> Value:
    dt, rank = cx.out_dtype(), len(cx.out_shape())
    parts = [cx.cast(t, dt) for t in tensors if t.rank == rank and math.prod(t.shape) > 0]
    if not parts:
        return cx.scalar(0, dt, cx.out_shape())
    return parts[0] if len(parts) == 1 else cx.op("concat", *parts, axis=dim % rank)


@converts("aten.stack")
def _stack(cx: TorchContext, tensors: Any, dim: int = 0) -> Value:
    rank = len(cx.out_shape())
    dim %= rank
    dt = cx.out_dtype()
    parts = [cx.reshape(cx.cast(t, dt), t.shape[:dim] + (1,) + t.shape[dim:]) for t in tensors]
    return parts[0] if len(parts) == 1 else cx.op("concat", *parts, axis=dim)


@converts("aten.constant_pad_nd")
def _pad(cx: TorchContext, x: Value, pad: Any, value: Any = 0) -> Value:
    low, high = [0] * x.rank, [0] * x.rank
    for i in range(len(pad) // 2):
        axis = x.rank - 1 - i
        low[axis], high[axis] = int(pad[2 * i]), int(pad[2 * i + 1])
    if any(p < 0 for p in low + high):
        raise UnsupportedError("constant_pad_nd with negative padding",
                               hint="slice the tensor instead")
    return cx.op("pad", x, low=tuple(low), high=tuple(high), value=float(value))


@converts("aten.repeat")
def _repeat(cx: TorchContext, x: Value, repeats: Any) -> Value:
    reps = tuple(int(r) for r in repeats)
    src = (1,) * (len(reps) - x.rank) + tuple(x.shape)
    inter = tuple(v for r, d in zip(reps, src, strict=True) for v in (r, d))
    y = cx.op("broadcast_to", cx.reshape(x, tuple(v for d in src for v in (1, d))), shape=inter)
    return cx.reshape(y, cx.out_shape())


# -- indexing ------------------------------------------------------------------

def _wrap(cx: TorchContext, idx: Value, size: int) -> Value:
    """Negative indices count from the end, as in torch."""
    neg = cx.op("lt", idx, cx.scalar(0, idx.dtype, idx.shape))
    return cx.op("select", neg, cx.op("add", idx, cx.scalar(size, idx.dtype, idx.shape)), idx)


@converts("aten.embedding")
def _embedding(cx: TorchContext, weight: Value, indices: Value, *args: Any) -> Value:
    return cx.op("gather", weight, indices, axis=0)


@converts("aten.index_select")
def _index_select(cx: TorchContext, x: Value, dim: int, index: Value) -> Value:
    if x.rank == 0:  # a 0-d tensor indexes as [1]; the only valid index is 0 (or -1)
        return cx.reshape(cx.op("gather", cx.reshape(x, (1,)), cx.reshape(
            _wrap(cx, index, 1), (math.prod(index.shape),)), axis=0), cx.out_shape())
    dim %= x.rank
    return cx.op("gather", x, _wrap(cx, index, x.shape[dim]), axis=dim)


@converts("aten.gather")
def _gather(cx: TorchContext, x: Value, dim: int, index: Value, sparse_grad: bool = False) -> Value:
    if x.rank == 0 or index.rank == 0:  # 0-d: as if both were [1]
        out = _gather(cx, cx.reshape(x, (1,) * max(x.rank, 1)), dim % max(x.rank, 1),
                      cx.reshape(index, (1,) * max(index.rank, 1)))
        return cx.reshape(out, cx.out_shape())
    dim %= x.rank
    for ax in range(x.rank):
        if ax != dim and index.shape[ax] != x.shape[ax]:
            x = _slice(cx, x, ax, 0, index.shape[ax])
    return cx.op("take_along_axis", x, _wrap(cx, index, x.shape[dim]), axis=dim)


@converts("aten.index")
def _index(cx: TorchContext, x: Value, indices: Any) -> Value:
    """x[..., idx0, idx1, ...]: advanced indexing with integer index tensors."""
    pos = [i for i, t in enumerate(indices) if t is not None]
    if any(indices[i].dtype == bool_ for i in pos):
        raise UnsupportedError("boolean mask indexing gives a data-dependent shape",
                               hint="use torch.where(mask, x, other) instead")
    idx_shape = _broadcast_shapes([indices[i].shape for i in pos])
    tensors = [indices[i] for i in pos]
    if pos != list(range(pos[0], pos[0] + len(pos))):
        # torch puts the index dims first when the indexed axes are not adjacent
        rest = [a for a in range(x.rank) if a not in pos]
        x = cx.op("transpose", x, perm=tuple(pos + rest))
        pos = list(range(len(pos)))
    first = pos[0]
    # one linear (row-major) index into the merged indexed axes
    linear = None
    stride = 1
    for p, i in zip(reversed(pos), reversed(tensors), strict=True):
        i = cx.bcast(_wrap(cx, i, x.shape[p]), idx_shape)
        term = i if stride == 1 else cx.op("mul", i, cx.scalar(stride, i.dtype, idx_shape))
        linear = term if linear is None else cx.op("add", linear, cx.cast(term, linear.dtype))
        stride *= x.shape[p]
    merged = x.shape[:first] + (stride,) + x.shape[first + len(pos):]
    return cx.reshape(cx.op("gather", cx.reshape(x, merged), linear, axis=first), cx.out_shape())


def _broadcast_shapes(shapes: list[tuple]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for s in shapes:
        for i, d in enumerate(s):
            j = rank - len(s) + i
            out[j] = d if out[j] == 1 else out[j]
    return tuple(out)


# -- sources -------------------------------------------------------------------

@converts("aten.arange")
def _arange(cx: TorchContext, *args: Any, **kwargs: Any) -> Value:
    nums = [a for a in args if isinstance(a, (int, float))]
    start, step = (nums[0], nums[2] if len(nums) > 2 else 1) if len(nums) >= 2 else (0, 1)
    dt, shape = cx.out_dtype(), cx.out_shape()
    y = cx.op("iota", shape=shape, dimension=0, dtype=dt)
    if step != 1:
        y = cx.op("mul", y, cx.scalar(step, dt, shape))
    if start != 0:
        y = cx.op("add", y, cx.scalar(start, dt, shape))
    return y


def _fill(value_of):
    def convert(cx: TorchContext, *args: Any, **kwargs: Any) -> Value:
        return cx.scalar(value_of(args), cx.out_dtype(), cx.out_shape())
    return convert


converts("aten.full", "aten.new_full")(_fill(lambda a: a[-1]))
converts("aten.full_like")(_fill(lambda a: a[1]))
converts("aten.scalar_tensor")(_fill(lambda a: a[0]))
converts("aten.zeros", "aten.zeros_like", "aten.new_zeros", "aten.empty", "aten.empty_like",
         "aten.new_empty", "aten.empty_strided", "aten.new_empty_strided",
         "aten.empty.memory_format", "aten.empty_permuted")(_fill(lambda a: 0))
converts("aten.ones", "aten.ones_like", "aten.new_ones")(_fill(lambda a: 1))


def _tri(lower: bool):
    def convert(cx: TorchContext, x: Value, diagonal: int = 0) -> Value:
        shape = tuple(x.shape)
        r = cx.op("iota", shape=shape, dimension=x.rank - 2, dtype=i64)
        c = cx.op("iota", shape=shape, dimension=x.rank - 1, dtype=i64)
        d = cx.op("sub", c, r)
        k = cx.scalar(diagonal, d.dtype, shape)
        keep = cx.op("le" if lower else "ge", d, k)
        return cx.op("select", keep, x, cx.scalar(0, x.dtype, shape))
    return convert


converts("aten.tril")(_tri(True))
converts("aten.triu")(_tri(False))
