"""ATen converters for CNN layers: convolution, pooling and batch norm, from primitives.

- convolution (1-D/2-D/3-D, stride, padding, dilation, groups; transposed ones
  as the forward convolution of the zero-dilated input with the flipped kernel)
  is an implicit GEMM: the padded input is sliced once per kernel offset (strided slices),
  the slices are stacked into patches [g, N*L, C/g*K] and multiplied with the
  weights [g, C/g*K, O/g] by one batched matmul, so the fusion pass puts it
  on the matmul path and it gets the matrix units when the matmul does;
- max and average pooling use the same per-offset slices, reduced with
  maximum / add (max pooling's indices by argmax over the offsets);
  adaptive pooling (separable, windows [floor(i n / o), ceil((i + 1) n / o)))
  reduces one slice per output position and axis;
- batch norm (inference, and training with batch statistics and running-stat
  updates) is elementwise arithmetic on broadcast per-channel vectors, so it
  fuses into the convolution's epilogue.
"""

from __future__ import annotations

import math
from typing import Any

from hal.dtypes import compute_dtype, i64
from hal.errors import UnsupportedError
from hal.frontends.torch_convert import TorchContext, converts
from hal.ir.graph import Value


def _ints(v: Any, n: int, default: int = 1) -> tuple[int, ...]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return (default,) * n
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def _windows(cx: TorchContext, x: Value, kernel: tuple[int, ...], stride: tuple[int, ...],
             pad_lo: tuple[int, ...], out: tuple[int, ...], dilation: tuple[int, ...],
             fill: float) -> list[Value]:
    """One strided slice of the padded x [N, C, *spatial] per kernel offset: each [N, C, *out]."""
    d = len(kernel)
    sp = tuple(x.shape[2:])
    # pad so every window of every output position is in range (ceil_mode may need more)
    need = tuple((out[i] - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 for i in range(d))
    hi = tuple(max(0, need[i] - pad_lo[i] - sp[i]) for i in range(d))
    if any(pad_lo) or any(hi):
        x = cx.op("pad", x, low=(0, 0) + tuple(pad_lo), high=(0, 0) + hi, value=float(fill))
    slices = []
    for off in _offsets(kernel):
        starts = tuple(off[i] * dilation[i] for i in range(d))
        stops = tuple(starts[i] + (out[i] - 1) * stride[i] + 1 for i in range(d))
        slices.append(cx.op("slice", x, starts=starts, stops=stops, steps=tuple(stride),
                            axes=tuple(range(2, 2 + d))))
    return slices


def _offsets(kernel: tuple[int, ...]) -> list[tuple[int, ...]]:
    offs: list[tuple[int, ...]] = [()]
    for k in kernel:
        offs = [o + (i,) for o in offs for i in range(k)]
    return offs


def _stack(cx: TorchContext, parts: list[Value], axis: int) -> Value:
    """Stack equal-shaped values along a new axis."""
    shp = tuple(parts[0].shape)
    r = [cx.reshape(p, shp[:axis] + (1,) + shp[axis:]) for p in parts]
    return r[0] if len(r) == 1 else cx.op("concat", *r, axis=axis)


# -- convolution -------------------------------------------------------------------


@converts("aten.convolution")
def _convolution(cx: TorchContext, x: Value, w: Value, bias: Value | None, stride: Any,
                 padding: Any, dilation: Any, transposed: bool, output_padding: Any,
                 groups: int) -> Value:
    out_shape = cx.out_shape()
    dt = cx.out_dtype()
    unbatched = x.rank == w.rank - 1
    if unbatched:
        x = cx.reshape(x, (1,) + tuple(x.shape))
    d = x.rank - 2
    g = int(groups)
    kernel = tuple(w.shape[2:])
    x, w = cx.cast(x, dt), cx.cast(w, dt)
    if transposed:
        # w [C, O/g, *K]: the weights of the equivalent forward convolution, [g, O/g, C/g*K]
        # with the kernel flipped (the patches take the offsets in reverse order)
        cg, og = w.shape[0] // g, w.shape[1]
        wm = cx.reshape(w, (g, cg, og, math.prod(kernel)))
        wm = cx.reshape(cx.op("transpose", wm, perm=(0, 2, 1, 3)), (g, og, cg * math.prod(kernel)))
        x = _dilate_pad(cx, x, kernel, _ints(stride, d), _ints(padding, d, 0),
                        _ints(dilation, d), _ints(output_padding, d, 0))
        stride, padding = (1,) * d, (0,) * d
    else:
        og = w.shape[0] // g
        wm = cx.reshape(w, (g, og, (w.shape[1]) * math.prod(kernel)))
    o = g * og
    out = tuple(out_shape[-d:])
    n = x.shape[0]
    if math.prod(out_shape) == 0:
        return cx.scalar(0, dt, out_shape)
    if wm.shape[2] == 0:  # nothing to contract: the bias alone
        y = cx.scalar(0, dt, (n, o) + out)
    else:
        parts = _windows(cx, x, kernel, _ints(stride, d), _ints(padding, d, 0), out,
                         _ints(dilation, d), 0.0)
        if transposed:
            parts = parts[::-1]
        y = _implicit_gemm(cx, _stack(cx, parts, 2), wm, g, out)
    if bias is not None:
        bshape = (1, o) + (1,) * d
        y = cx.op("add", y, cx.bcast(cx.reshape(cx.cast(bias, dt), bshape), y.shape))
    return cx.reshape(y, out_shape)


def _implicit_gemm(cx: TorchContext, patches: Value, wm: Value, g: int,
                   out: tuple[int, ...]) -> Value:
    """patches [N, C, K, *out] x weights [g, O/g, C/g*K] -> [N, O, *out], one batched matmul."""
    n, c, kk = patches.shape[0], patches.shape[1], patches.shape[2]
    cg, og, ll = c // g, wm.shape[1], math.prod(out)
    patches = cx.reshape(patches, (n, g, cg * kk, ll))
    patches = cx.op("transpose", patches, perm=(1, 0, 3, 2))  # [g, N, L, Cg*K]
    patches = cx.reshape(patches, (g, n * ll, cg * kk))
    wt = cx.op("transpose", wm, perm=(0, 2, 1))               # [g, Cg*K, Og]
    y = cx.op("matmul", patches, wt)                          # [g, N*L, Og]
    y = cx.reshape(y, (g, n, ll, og))
    y = cx.op("transpose", y, perm=(1, 0, 3, 2))              # [N, g, Og, L]
    return cx.reshape(y, (n, g * og) + out)


def _dilate_pad(cx: TorchContext, x: Value, kernel: tuple[int, ...], stride: tuple[int, ...],
                padding: tuple[int, ...], dilation: tuple[int, ...],
                output_padding: tuple[int, ...]) -> Value:
    """A transposed convolution's input as a forward one sees it: stride - 1 zeros between
    elements, dilation * (K - 1) - padding zeros before and that plus output_padding after
    (negative amounts crop)."""
    d = len(kernel)
    n, c, sp = x.shape[0], x.shape[1], tuple(x.shape[2:])
    if any(s > 1 for s in stride):
        inter = tuple(a for i in range(d) for a in (sp[i], 1))
        y = cx.reshape(x, (n, c) + inter)
        y = cx.op("pad", y, low=(0,) * (2 + 2 * d),
                  high=(0, 0) + tuple(a for i in range(d) for a in (0, stride[i] - 1)),
                  value=0.0)
        x = cx.reshape(y, (n, c) + tuple(sp[i] * stride[i] for i in range(d)))
    full = tuple((sp[i] - 1) * stride[i] + 1 for i in range(d))  # the dilated input's extent
    lo = tuple(dilation[i] * (kernel[i] - 1) - padding[i] for i in range(d))
    hi = tuple(lo[i] + output_padding[i] for i in range(d))
    cur = tuple(x.shape[2:])
    pad_lo = tuple(max(0, v) for v in lo)
    pad_hi = tuple(max(0, full[i] + hi[i] - cur[i]) for i in range(d))
    if any(pad_lo) or any(pad_hi):
        x = cx.op("pad", x, low=(0, 0) + pad_lo, high=(0, 0) + pad_hi, value=0.0)
    starts = tuple(max(0, -v) for v in lo)
    stops = tuple(pad_lo[i] + full[i] + hi[i] for i in range(d))
    if any(starts) or stops != tuple(x.shape[2:]):
        x = cx.op("slice", x, starts=starts, stops=stops, steps=(1,) * d,
                  axes=tuple(range(2, 2 + d)))
    return x


# -- pooling -----------------------------------------------------------------------


def _batched(cx: TorchContext, x: Value, d: int) -> Value:
    """x with a batch dim: pooling takes [C, *spatial] or [N, C, *spatial]."""
    return cx.reshape(x, (1,) + tuple(x.shape)) if x.rank == d + 1 else x


@converts("aten.max_pool2d_with_indices", "aten.max_pool3d_with_indices",
          "aten.max_pool1d_with_indices")
def _max_pool(cx: TorchContext, x: Value, kernel_size: Any, stride: Any = None,
              padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> tuple[Value, Value]:
    vshape = cx.out_shape(0)
    d = len(_ints(kernel_size, 1)) if isinstance(kernel_size, (list, tuple)) and \
        len(kernel_size) > 1 else int(cx.node.target.__name__[len("max_pool")])
    kernel = _ints(kernel_size, d)
    st = _ints(stride, d) if stride else kernel
    pad, dil = _ints(padding, d, 0), _ints(dilation, d)
    xb = _batched(cx, x, d)
    out = tuple(vshape[-d:])
    if math.prod(vshape) == 0:
        return cx.scalar(0, x.dtype, vshape), cx.scalar(0, i64, vshape)
    fill = -math.inf if x.dtype.is_float else float(-(1 << (x.dtype.bits - 1)))
    parts = _windows(cx, xb, kernel, st, pad, out, dil, fill)
    stacked = _stack(cx, parts, 2)                                 # [N, C, K, *out]
    values = cx.op("reduce_max", stacked, axes=(2,), keepdims=False)
    arg = cx.op("argmax", stacked, axis=2, keepdims=False, dtype=i64)
    # flat input index of the chosen offset: sum_i (o_i * s_i - p_i + k_i * d_i) * stride_i
    sp = tuple(xb.shape[2:])
    flat = None
    kstride = math.prod(kernel)
    for i in range(d):
        kstride //= kernel[i]
        ki = cx.op("remainder", cx.op("div", arg, cx.scalar(kstride, i64, arg.shape)),
                   cx.scalar(kernel[i], i64, arg.shape))
        oi = cx.op("iota", shape=tuple(arg.shape), dimension=2 + i, dtype=i64)
        pos = cx.op("add", cx.op("mul", oi, cx.scalar(st[i], i64, arg.shape)),
                    cx.op("mul", ki, cx.scalar(dil[i], i64, arg.shape)))
        pos = cx.op("sub", pos, cx.scalar(pad[i], i64, arg.shape))
        term = cx.op("mul", pos, cx.scalar(math.prod(sp[i + 1:]), i64, arg.shape))
        flat = term if flat is None else cx.op("add", flat, term)
    return cx.reshape(values, vshape), cx.reshape(flat, cx.out_shape(1))


@converts("aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d")
def _avg_pool(cx: TorchContext, x: Value, kernel_size: Any, stride: Any = None,
              padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
              divisor_override: Any = None) -> Value:
    shape, dt = cx.out_shape(), cx.out_dtype()
    d = int(cx.node.target.__name__[len("avg_pool")])
    kernel = _ints(kernel_size, d)
    st = _ints(stride, d) if stride else kernel
    pad = _ints(padding, d, 0)
    xb = _batched(cx, cx.cast(x, compute_dtype(dt)), d)
    out = tuple(shape[-d:])
    if math.prod(shape) == 0:
        return cx.scalar(0, dt, shape)
    one = (1,) * d
    total = _sum_windows(cx, _windows(cx, xb, kernel, st, pad, out, one, 0.0))
    if divisor_override:
        div = cx.scalar(float(divisor_override), total.dtype, total.shape)
    else:
        # how many elements each window averages: ones inside the input (and inside the
        # padding when count_include_pad), zeros beyond
        ones = cx.scalar(1, total.dtype, (1, 1) + tuple(xb.shape[2:]))
        if count_include_pad and any(pad):
            ones = cx.op("pad", ones, low=(0, 0) + pad, high=(0, 0) + pad, value=1.0)
            counts = _windows(cx, ones, kernel, st, (0,) * d, out, one, 0.0)
        else:
            counts = _windows(cx, ones, kernel, st, pad, out, one, 0.0)
        div = cx.bcast(_sum_windows(cx, counts), total.shape)
    return cx.cast(cx.reshape(cx.op("div", total, div), shape), dt)


def _sum_windows(cx: TorchContext, parts: list[Value]) -> Value:
    acc = parts[0]
    for p in parts[1:]:
        acc = cx.op("add", acc, p)
    return acc


def _adaptive(cx: TorchContext, x: Value, out_size: Any, d: int, reduce: str) -> Value:
    shape = cx.out_shape(0) if isinstance(cx.out, (list, tuple)) else cx.out_shape()
    y = _batched(cx, x, d)
    if math.prod(shape) == 0:
        return cx.scalar(0, x.dtype, shape)
    for i in range(d):
        axis = 2 + i
        n, o = y.shape[axis], shape[-d + i]
        if n == o:
            continue
        pieces = []
        for j in range(o):
            lo, hi = (j * n) // o, -((-(j + 1) * n) // o)
            s = cx.op("slice", y, starts=(lo,), stops=(hi,), steps=(1,), axes=(axis,))
            pieces.append(cx.op(reduce, s, axes=(axis,), keepdims=True))
        y = pieces[0] if len(pieces) == 1 else cx.op("concat", *pieces, axis=axis)
    return cx.reshape(y, shape)


@converts("aten._adaptive_avg_pool2d", "aten._adaptive_avg_pool3d", "aten.adaptive_avg_pool1d")
def _adaptive_avg(cx: TorchContext, x: Value, output_size: Any) -> Value:
    d = len(cx.out_shape()) - (2 if x.rank == len(cx.out_shape()) and x.rank > 2 else 1)
    d = len(_ints(output_size, 1)) if isinstance(output_size, (list, tuple)) else d
    dt = cx.out_dtype()
    return cx.cast(_adaptive(cx, cx.cast(x, compute_dtype(dt)), output_size, d, "mean"), dt)


@converts("aten.adaptive_max_pool2d", "aten.adaptive_max_pool3d", "aten.adaptive_max_pool1d")
def _adaptive_max(cx: TorchContext, x: Value, output_size: Any) -> tuple[Value, Value]:
    d = len(output_size) if isinstance(output_size, (list, tuple)) else 1
    sp, out = tuple(x.shape[-d:]), tuple(cx.out_shape(0)[-d:])
    if all(n % o == 0 for n, o in zip(sp, out, strict=True) if o):
        k = tuple(n // o if o else 1 for n, o in zip(sp, out, strict=True))
        return _max_pool(cx, x, list(k), list(k), [0] * d, [1] * d, False)
    if any(u.args[1] == 1 for u in cx.node.users if u.op == "call_function"):
        raise UnsupportedError("adaptive_max_pool indices for windows of unequal size",
                               hint="use an input size divisible by the output size")
    return _adaptive(cx, x, output_size, d, "reduce_max"), cx.scalar(0, i64, cx.out_shape(1))


# -- batch norm --------------------------------------------------------------------


def _channel(cx: TorchContext, v: Value | None, like: Value, fill: float) -> Value:
    """A per-channel vector [C] broadcast to like's shape [N, C, ...]."""
    c = like.shape[1] if like.rank > 1 else like.shape[0]
    if v is None:
        return cx.scalar(fill, like.dtype, like.shape)
    shp = (1, c) + (1,) * (like.rank - 2) if like.rank > 1 else (c,)
    return cx.bcast(cx.reshape(cx.cast(v, like.dtype), shp), like.shape)


def _normalize(cx: TorchContext, x: Value, mean: Value, var: Value, weight: Value | None,
               bias: Value | None, eps: float) -> tuple[Value, Value]:
    rstd = cx.op("rsqrt", cx.op("add", var, cx.scalar(eps, var.dtype, var.shape)))
    y = cx.op("mul", cx.op("sub", x, _channel(cx, mean, x, 0)), _channel(cx, rstd, x, 1))
    y = cx.op("add", cx.op("mul", y, _channel(cx, weight, x, 1.0)), _channel(cx, bias, x, 0.0))
    return y, rstd


@converts("aten._native_batch_norm_legit_no_training")
def _bn_inference(cx: TorchContext, x: Value, weight: Value | None, bias: Value | None,
                  running_mean: Value, running_var: Value, momentum: float,
                  eps: float) -> tuple[Value, Value, Value]:
    dt = cx.out_dtype(0)
    xc = cx.cast(x, compute_dtype(dt))
    y, _ = _normalize(cx, xc, cx.cast(running_mean, xc.dtype), cx.cast(running_var, xc.dtype),
                      weight, bias, eps)
    empty = cx.scalar(0, cx.out_dtype(1), cx.out_shape(1))
    return cx.cast(y, dt), empty, cx.scalar(0, cx.out_dtype(2), cx.out_shape(2))


@converts("aten._native_batch_norm_legit_functional", "aten.native_batch_norm",
          "aten._native_batch_norm_legit.no_stats", "aten._native_batch_norm_legit")
def _bn(cx: TorchContext, x: Value, weight: Value | None, bias: Value | None, *rest: Any) -> Any:
    name = cx.node.target.__name__
    if name.startswith("_native_batch_norm_legit.no_stats"):
        running_mean = running_var = None
        training, momentum, eps = rest
    else:
        running_mean, running_var, training, momentum, eps = rest
    dt = cx.out_dtype(0)
    xc = cx.cast(x, compute_dtype(dt))
    axes = tuple(a for a in range(xc.rank) if a != 1)
    if training or running_mean is None:
        mean = cx.op("mean", xc, axes=axes, keepdims=False)
        var = cx.op("variance", xc, axes=axes, keepdims=False, correction=0)
    else:
        mean, var = cx.cast(running_mean, xc.dtype), cx.cast(running_var, xc.dtype)
    y, rstd = _normalize(cx, xc, mean, var, weight, bias, eps)
    outs = [cx.cast(y, dt), cx.cast(mean, cx.out_dtype(1)), cx.cast(rstd, cx.out_dtype(2))]
    if not training:  # torch returns empty save_mean / save_invstd in eval mode
        outs[1] = cx.scalar(0, cx.out_dtype(1), cx.out_shape(1))
        outs[2] = cx.scalar(0, cx.out_dtype(2), cx.out_shape(2))
    if name.startswith("_native_batch_norm_legit_functional"):
        if training and running_mean is not None:
            n = math.prod(xc.shape[a] for a in axes)
            unbiased = cx.op("mul", var, cx.scalar(n / max(n - 1, 1), var.dtype, var.shape))
            m = cx.scalar(momentum, mean.dtype, mean.shape)
            keep = cx.scalar(1 - momentum, mean.dtype, mean.shape)
            rm = cx.op("add", cx.op("mul", keep, cx.cast(running_mean, mean.dtype)),
                       cx.op("mul", m, mean))
            rv = cx.op("add", cx.op("mul", keep, cx.cast(running_var, mean.dtype)),
                       cx.op("mul", m, unbiased))
            outs += [cx.cast(rm, cx.out_dtype(3)), cx.cast(rv, cx.out_dtype(4))]
        else:
            outs += [running_mean, running_var]
    return tuple(outs)


@converts("aten.native_group_norm")
def _group_norm(cx: TorchContext, x: Value, weight: Value | None, bias: Value | None, n: int,
                c: int, hw: int, group: int, eps: float) -> tuple[Value, Value, Value]:
    dt = cx.out_dtype(0)
    xc = cx.cast(x, compute_dtype(dt))
    g = cx.reshape(xc, (n, group, (c // group) * hw))
    mean = cx.op("mean", g, axes=(2,), keepdims=True)
    var = cx.op("variance", g, axes=(2,), keepdims=True, correction=0)
    rstd = cx.op("rsqrt", cx.op("add", var, cx.scalar(eps, var.dtype, var.shape)))
    y = cx.op("mul", cx.op("sub", g, cx.bcast(mean, g.shape)), cx.bcast(rstd, g.shape))
    y = cx.reshape(y, tuple(x.shape))
    y = cx.op("add", cx.op("mul", y, _channel(cx, weight, y, 1.0)), _channel(cx, bias, y, 0.0))
    stat = (n, group)
    return (cx.cast(y, dt), cx.cast(cx.reshape(mean, stat), cx.out_dtype(1)),
            cx.cast(cx.reshape(rstd, stat), cx.out_dtype(2)))


# -- interpolation -----------------------------------------------------------------


def _scales(x: Value, out: tuple[int, ...], scale_factors: Any, d: int) -> list[float]:
    """torch's source-per-destination scale per spatial axis."""
    sp = tuple(x.shape[-d:])
    if scale_factors:
        sf = _ints_f(scale_factors, d)
        return [1.0 / s for s in sf]
    return [sp[i] / out[i] if out[i] else 0.0 for i in range(d)]


def _ints_f(v: Any, n: int) -> tuple[float, ...]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(float(x) for x in (v * n if len(v) == 1 else v))


@converts("aten.upsample_nearest1d.vec", "aten.upsample_nearest2d.vec",
          "aten.upsample_nearest3d.vec")
def _upsample_nearest(cx: TorchContext, x: Value, output_size: Any,
                      scale_factors: Any = None) -> Value:
    shape = cx.out_shape()
    d = len(shape) - 2
    out = tuple(shape[-d:])
    y = x
    for i, s in enumerate(_scales(x, out, scale_factors, d)):
        axis = x.rank - d + i
        n, o = x.shape[axis], out[i]
        if n == o and s == 1.0:
            continue
        from hal.dtypes import f32

        src = cx.op("floor", cx.op("mul", cx.op("iota", shape=(o,), dimension=0, dtype=f32),
                                   cx.scalar(s, f32, (o,))))
        idx = cx.op("minimum", cx.cast(src, i64), cx.scalar(n - 1, i64, (o,)))
        y = cx.op("gather", y, idx, axis=axis)
    return y


@converts("aten.upsample_bilinear2d.vec", "aten.upsample_linear1d.vec",
          "aten.upsample_trilinear3d.vec")
def _upsample_linear(cx: TorchContext, x: Value, output_size: Any, align_corners: bool,
                     scale_factors: Any = None) -> Value:
    shape, dt = cx.out_shape(), cx.out_dtype()
    d = len(shape) - 2
    out = tuple(shape[-d:])
    y = cx.cast(x, compute_dtype(dt))
    cdt = y.dtype
    for i, s in enumerate(_scales(x, out, scale_factors, d)):
        axis = x.rank - d + i
        n, o = x.shape[axis], out[i]
        dst = cx.op("iota", shape=(o,), dimension=0, dtype=cdt)
        if align_corners:
            r = (n - 1) / (o - 1) if o > 1 else 0.0
            src = cx.op("mul", dst, cx.scalar(r, cdt, (o,)))
        else:
            src = cx.op("sub", cx.op("mul", cx.op("add", dst, cx.scalar(0.5, cdt, (o,))),
                                     cx.scalar(s, cdt, (o,))), cx.scalar(0.5, cdt, (o,)))
            src = cx.op("maximum", src, cx.scalar(0, cdt, (o,)))
        i0 = cx.op("minimum", cx.cast(cx.op("floor", src), i64), cx.scalar(n - 1, i64, (o,)))
        i1 = cx.op("minimum", cx.op("add", i0, cx.scalar(1, i64, (o,))),
                   cx.scalar(n - 1, i64, (o,)))
        lam = cx.op("sub", src, cx.cast(i0, cdt))
        wshape = (1,) * axis + (o,) + (1,) * (y.rank - axis - 1)
        a, b = cx.op("gather", y, i0, axis=axis), cx.op("gather", y, i1, axis=axis)
        lam_b = cx.bcast(cx.reshape(lam, wshape), a.shape)
        one = cx.scalar(1, cdt, a.shape)
        y = cx.op("add", cx.op("mul", a, cx.op("sub", one, lam_b)), cx.op("mul", b, lam_b))
    return cx.cast(y, dt)


# -- torch.nn.functional.linear_cross_entropy's chunked custom ops ---------------------

def linear_cross_entropy(cx: TorchContext, x: Value, w: Value, target: Value, bias: Any,
                         weight: Any, reduction: str, ignore_index: int, dt: Any) -> Value:
    """cross_entropy(x @ w.T + bias, target) with class weights and ignore_index, as the
    chunked op computes it chunk by chunk: the logits [N, C] are one matmul; log_softmax
    over classes; the target's log-probability by take_along_axis; mean divides by the
    valid targets' weights (0 / 0 = NaN when every target is ignored, as in torch)."""
    if x.rank != 2 or w.rank != 2 or target.rank != 1 or target.dtype.is_float:
        raise UnsupportedError(
            f"linear_cross_entropy with input {list(x.shape)}, weight "
            f"{list(w.shape)}, target {list(target.shape)} {target.dtype}: only [N, D] inputs, "
            f"[C, D] weights and class-index targets are converted",
            hint="flatten the batch dimensions before the loss")
    n, c = x.shape[0], w.shape[0]
    logits = cx.op("matmul", cx.cast(x, dt), cx.op("transpose", cx.cast(w, dt), perm=(1, 0)))
    if bias is not None:
        logits = cx.op("add", logits, cx.bcast(cx.reshape(cx.cast(bias, dt), (1, c)), (n, c)))
    logp = cx.op("log_softmax", logits, axis=1)
    t = cx.cast(target, i64)
    valid = cx.op("ne", t, cx.scalar(ignore_index, i64, (n,)))
    safe_t = cx.op("select", valid, t, cx.scalar(0, i64, (n,)))
    picked = cx.reshape(cx.op("take_along_axis", logp, cx.reshape(safe_t, (n, 1)), axis=1),
                        (n,))
    zero = cx.scalar(0, dt, (n,))
    w_t = (cx.op("gather", cx.cast(weight, dt), safe_t, axis=0) if weight is not None
           else cx.scalar(1, dt, (n,)))
    w_t = cx.op("select", valid, w_t, zero)
    nll = cx.op("select", valid, cx.op("neg", cx.op("mul", w_t, picked)), zero)
    if reduction == "none":
        return nll
    if reduction not in ("sum", "mean"):
        raise UnsupportedError(f"linear_cross_entropy reduction {reduction!r}",
                               hint="use 'mean', 'sum' or 'none'")
    loss = cx.op("reduce_sum", nll, axes=(0,), keepdims=False)
    if reduction == "sum":
        return loss
    return cx.op("div", loss, cx.op("reduce_sum", w_t, axes=(0,), keepdims=False))


@converts("torch_nn._linear_cross_entropy_batch_chunked")
def _linear_ce_chunked(cx: TorchContext, x: Value, w: Value, target: Value, bias: Any,
                       weight: Any, reduction: str, ignore_index: int, label_smoothing: float,
                       *options: Any) -> tuple[Value, ...]:
    # options: batch_chunk_size, acc_policy, acc_dtype, allow_retain_graph, then the three
    # compute_*_grad flags; with a flag set the forward also precomputes that gradient
    if label_smoothing:
        raise UnsupportedError("linear_cross_entropy's chunked op with label "
                               "smoothing (torch's own op rejects it: NotImplementedError)",
                               hint="label smoothing takes torch's non-chunked path")
    if any(bool(f) for f in options[-3:]):
        raise UnsupportedError("linear_cross_entropy with precomputed gradients "
                               "(compute_*_grad set: the program was exported for training)",
                               hint="export under torch.no_grad() or with inputs that do not "
                                    "require grad")
    loss = linear_cross_entropy(cx, x, w, target, bias, weight, reduction, int(ignore_index),
                                cx.out_dtype(0))
    empties = tuple(cx.scalar(0, cx.out_dtype(k), cx.out_shape(k)) for k in (1, 2, 3))
    return (loss, *empties)


@converts("torch_nn._linear_cross_entropy_batch_chunked_no_reduction")
def _linear_ce_chunked_none(cx: TorchContext, x: Value, w: Value, target: Value, bias: Any,
                            weight: Any, ignore_index: int, *options: Any) -> Value:
    return linear_cross_entropy(cx, x, w, target, bias, weight, "none", int(ignore_index),
                                cx.out_dtype())
