"""The ATen converter for scaled_dot_product_attention, with the mask a library passes it.

torch.export keeps `aten.scaled_dot_product_attention` whole when hal decomposes the
program (`torch_export.decompose_program`): decomposed, it becomes torch's math
attention with a "safe" softmax (rows whose keys are all masked give 0, computed by
an any-reduction over the scores), which no longer has the shape of one attention.
Kept whole, it becomes hal's attention composite, which the fusion pass matches into
one attention kernel:

* no mask: `scaled_dot_product_attention(causal=is_causal)`;
* a mask that depends on no model input (the causal mask transformers builds from
  positions with arange, compares and gathers) is evaluated at import
  (`TorchContext.fold`). A pure causal pattern (key j visible to query i iff j <= i)
  becomes `causal=True`: the kernel computes it from its indices and reads no mask.
  Anything else (a sliding window, a static cache's visible prefix) becomes an
  additive mask constant [.., S, T] that the kernel reads per tile;
* a mask computed from model inputs (a padding mask) stays a graph value: a boolean
  mask becomes additive (0 / -inf) and is added to the scores inside the kernel.

torch's rows with every key masked give 0 (torch >= 2.5), where a softmax gives 0/0.
hal keeps that: the output is selected to 0 on such rows, with the row test computed
from the mask alone (a key is hidden when its mask entry is -inf or False). For a
folded mask the rows are known at import and the select is emitted only when some row
is empty. This assumes the scores q k^T are finite, as they are unless q or k hold
infinities.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hal.dtypes import bool_, compute_dtype
from hal.errors import UnsupportedError
from hal.frontends.torch_convert import TorchContext, converts, hal_dtype
from hal.ir.graph import Value

# an additive entry at or below this hides its key as -inf does, once the row keeps a key
# (exp(x + mask - max) underflows to exactly 0 in every float dtype hal has)
HIDDEN = -1e30


def _mask_arg(cx: TorchContext) -> Any:
    """The FX node (or None) passed as attn_mask, for folding."""
    node = cx.node
    if len(node.args) > 3:
        return node.args[3]
    return node.kwargs.get("attn_mask")


@converts("aten.scaled_dot_product_attention.default")
def _sdpa(cx: TorchContext, q: Value, k: Value, v: Value, attn_mask: Any = None,
          dropout_p: float = 0.0, is_causal: bool = False, *, scale: float | None = None,
          enable_gqa: bool = False) -> Value:
    if dropout_p:
        raise UnsupportedError(f"{cx.where()}: attention dropout (p={dropout_p}) is random",
                               hint="export the model in eval mode (model.eval()), where "
                                    "dropout is 0")
    if is_causal and attn_mask is not None:
        raise UnsupportedError(f"{cx.where()}: attn_mask and is_causal together",
                               hint="torch rejects this too; pass one of them")
    out_shape = cx.out_shape()
    q4, k4, v4 = (_rank4(cx, x, what) for x, what in ((q, "q"), (k, "k"), (v, "v")))
    attrs: dict[str, Any] = {"scale": None if scale is None else float(scale)}
    guard: Value | None = None
    if attn_mask is None:
        out = cx.op("scaled_dot_product_attention", q4, k4, v4, causal=bool(is_causal), **attrs)
    else:
        folded = cx.fold(_mask_arg(cx))
        if folded is not None:
            out, guard = _constant_mask(cx, q4, k4, v4, folded, attrs)
        else:
            out, guard = _value_mask(cx, q4, k4, v4, attn_mask, attrs)
    if guard is not None:
        zero = cx.scalar(0, out.dtype, out.shape)
        out = cx.op("select", cx.bcast(guard, out.shape), out, zero)
    return cx.reshape(out, out_shape)


def _rank4(cx: TorchContext, x: Value, what: str) -> Value:
    """q/k/v as [B, H, L, E]: a rank-3 input gets one head, leading batch dims merge."""
    if x.rank < 3:
        raise UnsupportedError(f"{cx.where()}: {what} has rank {x.rank}",
                               hint="scaled_dot_product_attention takes [..., L, E] with at "
                                    "least one batch dim")
    if x.rank == 3:
        return cx.reshape(x, (x.shape[0], 1, *x.shape[1:]))
    if x.rank > 4:
        return cx.reshape(x, (math.prod(x.shape[:-3]), *x.shape[-3:]))
    return x


def _mask_shape(cx: TorchContext, shape: tuple[int, ...], full: tuple[int, ...]) -> tuple:
    """A mask's shape brought to rank 4 beside [B, H, S, T] (leading batch dims merged)."""
    shape = tuple(shape)
    if len(shape) > 4:
        lead = shape[:-3]
        if any(d != 1 for d in lead) and math.prod(lead) != full[0]:
            raise UnsupportedError(f"{cx.where()}: a mask of shape {list(shape)} broadcasts "
                                   "over several batch dims",
                                   hint="give the mask the queries' batch dims")
        shape = (math.prod(lead), *shape[-3:])
    return (1,) * (4 - len(shape)) + shape


def _constant_mask(cx: TorchContext, q: Value, k: Value, v: Value, folded: Any,
                   attrs: dict) -> tuple[Value, Value | None]:
    import torch

    full = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    m = folded.detach().cpu()
    if m.dtype == torch.bool:
        keep = m.numpy().astype(bool)
        add = np.where(keep, 0.0, -np.inf)
    else:
        add = m.double().numpy()
        keep = add > HIDDEN
    shape = _mask_shape(cx, add.shape, full)
    add, keep = add.reshape(shape), keep.reshape(shape)
    hidden_ok = bool(np.all(add[~keep] <= HIDDEN)) if (~keep).any() else True
    clean = bool(keep.any(axis=-1).all()) and hidden_ok and bool(np.all(add[keep] == 0.0))
    s, t = full[2], full[3]
    if clean and keep.all():
        return cx.op("scaled_dot_product_attention", q, k, v, causal=False, **attrs), None
    tril = np.tril(np.ones((s, t), dtype=bool))
    if clean and np.array_equal(np.broadcast_to(keep, shape[:-2] + (s, t)),
                                np.broadcast_to(tril, shape[:-2] + (s, t))):
        return cx.op("scaled_dot_product_attention", q, k, v, causal=True, **attrs), None
    dt = hal_dtype(m.dtype) if m.is_floating_point() else compute_dtype(q.dtype)
    out = cx.op("sdpa_masked", q, k, v, cx.constant("attn_mask", dt, add), **attrs)
    # rows whose every key is -inf: torch gives 0 there
    live = ~np.isneginf(add).all(axis=-1, keepdims=True)
    return out, None if live.all() else cx.constant("attn_rows", bool_, live)


def _value_mask(cx: TorchContext, q: Value, k: Value, v: Value, mask: Value,
                attrs: dict) -> tuple[Value, Value]:
    full = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    mask = cx.reshape(mask, _mask_shape(cx, mask.shape, full))
    cdt = compute_dtype(q.dtype)
    if mask.dtype.is_bool:
        keep = mask
        add = cx.op("select", mask, cx.scalar(0, cdt, mask.shape),
                    cx.scalar(-math.inf, cdt, mask.shape))
    elif mask.dtype.is_float:
        add = mask
        keep = cx.op("ne", mask, cx.scalar(-math.inf, mask.dtype, mask.shape))
    else:
        raise UnsupportedError(f"{cx.where()}: attn_mask of dtype {mask.dtype.name}",
                               hint="pass a bool or float mask")
    rows = cx.op("reduce_any", keep, axes=(3,), keepdims=True)
    return cx.op("sdpa_masked", q, k, v, add, **attrs), rows
