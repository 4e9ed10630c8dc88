"""ATen converter for `grid_sampler_3d` (F.grid_sample on 5-D inputs), from primitives.

torch decomposes the 2-D grid sampler at export, not the 3-D one. This follows the
same definition (torch._decomp's `_grid_sampler_2d`, one axis more):

- grid coordinates in [-1, 1] are unnormalized per axis to [-0.5, size - 0.5]
  (align_corners=False) or [0, size - 1] (True), with the CPU kernel's arithmetic;
- padding: zeros (corners outside the input weigh 0), border (clamped), reflection
  (reflected about the edges, then clamped);
- trilinear: the 8 corners around the point, weights the products of the distances to
  the opposite corner, summed in the CPU kernel's order; nearest: the point rounded
  half to even.

Each corner is one take_along_axis over the input flattened to [N, C, D*H*W], with
the linear index of the corner broadcast over channels.
"""

from __future__ import annotations

from typing import Any

from hal.dtypes import i64
from hal.errors import UnsupportedError
from hal.frontends.torch_convert import TorchContext, converts
from hal.ir.graph import Value


def _k(cx: TorchContext, v: float, like: Value) -> Value:
    return cx.scalar(v, like.dtype, like.shape)


def _reflect(cx: TorchContext, c: Value, twice_low: int, twice_high: int) -> Value:
    if twice_low == twice_high:
        return _k(cx, 0, c)
    lo, span = twice_low / 2, (twice_high - twice_low) / 2
    c2 = cx.op("abs", cx.op("sub", c, _k(cx, lo, c)))
    flips = cx.op("floor", cx.op("div", c2, _k(cx, span, c)))
    extra = cx.op("sub", c2, cx.op("mul", flips, _k(cx, span, c)))      # fmod, c2 >= 0
    even = cx.op("eq", cx.op("sub", flips, cx.op("mul", cx.op("floor", cx.op(
        "mul", flips, _k(cx, 0.5, c))), _k(cx, 2, c))), _k(cx, 0, c))
    return cx.op("select", even, cx.op("add", extra, _k(cx, lo, c)),
                 cx.op("sub", _k(cx, span + lo, c), extra))


def _source(cx: TorchContext, c: Value, size: int, padding: int, align: bool) -> Value:
    # as torch's CPU kernel rounds it: ((c + 1) / 2) (size - 1), or ((c + 1) size - 1) / 2
    c1 = cx.op("add", c, _k(cx, 1, c))
    if align:
        c = cx.op("mul", cx.op("div", c1, _k(cx, 2, c)), _k(cx, size - 1, c))
    else:
        c = cx.op("div", cx.op("sub", cx.op("mul", c1, _k(cx, size, c)), _k(cx, 1, c)),
                  _k(cx, 2, c))
    if padding == 0:
        return c
    if padding == 2:
        c = _reflect(cx, c, 0, 2 * (size - 1)) if align else _reflect(cx, c, -1, 2 * size - 1)
    return cx.op("minimum", cx.op("maximum", c, _k(cx, 0, c)), _k(cx, size - 1, c))


@converts("aten.grid_sampler_3d")
def _grid_sampler_3d(cx: TorchContext, a: Value, grid: Value, interpolation_mode: int,
                     padding_mode: int, align_corners: bool) -> Value:
    if interpolation_mode not in (0, 1) or padding_mode not in (0, 1, 2):
        raise UnsupportedError(f"grid_sampler_3d mode {interpolation_mode}, "
                               f"padding {padding_mode}",
                               hint="3-D sampling is trilinear (0) or nearest (1); padding "
                                    "zeros, border or reflection")
    dt = cx.out_dtype()
    n, c, d_in, h_in, w_in = a.shape
    _, od, oh, ow, _three = grid.shape
    p = od * oh * ow
    g = cx.reshape(cx.cast(grid, dt), (n, p, 3))

    def coord(k: int, size: int) -> Value:
        gk = cx.reshape(cx.op("slice", g, starts=(k,), stops=(k + 1,), steps=(1,), axes=(2,)),
                        (n, p))
        return _source(cx, gk, size, padding_mode, bool(align_corners))

    ix, iy, iz = coord(0, w_in), coord(1, h_in), coord(2, d_in)
    flat = cx.reshape(cx.cast(a, dt), (n, c, d_in * h_in * w_in))

    def corner(xs: Value, ys: Value, zs: Value, w: Value) -> Value:
        inb = None
        for v, size in ((xs, w_in), (ys, h_in), (zs, d_in)):
            ok = cx.op("logical_and", cx.op("ge", v, _k(cx, 0, v)),
                       cx.op("lt", v, _k(cx, size, v)))
            inb = ok if inb is None else cx.op("logical_and", inb, ok)
        lin = cx.op("add", cx.op("mul", cx.op("add", cx.op("mul", zs, _k(cx, h_in, zs)), ys),
                                 _k(cx, w_in, zs)), xs)
        lin = cx.op("select", inb, cx.cast(lin, i64), cx.scalar(0, i64, (n, p)))
        w = cx.op("select", inb, w, _k(cx, 0, w))
        idx = cx.bcast(cx.reshape(lin, (n, 1, p)), (n, c, p))
        vals = cx.op("take_along_axis", flat, idx, axis=2)
        return cx.op("mul", vals, cx.bcast(cx.reshape(w, (n, 1, p)), (n, c, p)))

    if interpolation_mode == 1:
        y = corner(cx.op("round", ix), cx.op("round", iy), cx.op("round", iz), _k(cx, 1, ix))
    else:
        x0, y0, z0 = cx.op("floor", ix), cx.op("floor", iy), cx.op("floor", iz)
        one = _k(cx, 1, ix)
        x1, y1, z1 = cx.op("add", x0, one), cx.op("add", y0, one), cx.op("add", z0, one)
        y = None
        # torch's order: top (z0) then bottom, north (y0) then south, west (x0) then east
        for zs, wz in ((z0, cx.op("sub", z1, iz)), (z1, cx.op("sub", iz, z0))):
            for ys, wy in ((y0, cx.op("sub", y1, iy)), (y1, cx.op("sub", iy, y0))):
                for xs, wx in ((x0, cx.op("sub", x1, ix)), (x1, cx.op("sub", ix, x0))):
                    t = corner(xs, ys, zs, cx.op("mul", cx.op("mul", wx, wy), wz))
                    y = t if y is None else cx.op("add", y, t)
    return cx.reshape(y, (n, c, od, oh, ow))


__all__: list[Any] = []
