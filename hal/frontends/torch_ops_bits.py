"""ATen converters for integer bit arithmetic and float decomposition, from primitives.

- bitwise_left_shift / bitwise_right_shift (and the `<<`, `>>` operators): hal has
  no shift primitive, so a << b is a * 2^b (wrapping, as the shift does) and
  a >> b is floor(a / 2^b) (arithmetic: negative values round toward -inf).
  2^b is built from b's binary digits by selects, and split as 2^h * 2^(b - h)
  with h = b // 2 so no factor overflows the dtype. Shift amounts outside
  [0, bits) give what torch's CPU kernels give: 0, or -1 for a negative value
  shifted right;
- gcd / lcm: Euclid's algorithm unrolled to the dtype's worst case (92 steps for
  int64: consecutive Fibonacci numbers), as selects and remainders;
- frexp: x = mantissa * 2^exponent with |mantissa| in [0.5, 1): the exponent
  from floor(log2 |x|) + 1, corrected by one where log2's rounding lands on the
  wrong side of a power of two, and the mantissa as x * 2^-exponent in two exact
  power-of-two steps (subnormal inputs stay exact). 0, inf and NaN keep
  their value with exponent 0, as in torch.
"""

from __future__ import annotations

import math
from typing import Any

from hal.dtypes import i32
from hal.frontends.torch_convert import TorchContext, converts
from hal.ir.graph import Value


def _k(cx: TorchContext, v: Any, like: Value) -> Value:
    return cx.scalar(v, like.dtype, like.shape)


def pow2(cx: TorchContext, e: Value, max_e: int) -> Value:
    """2^e for an integer tensor e in [0, max_e], in e's dtype (2^max_e must fit)."""
    p = _k(cx, 1, e)
    r = e
    for j in reversed(range(max(1, max_e.bit_length()))):
        step = 1 << j
        take = cx.op("ge", r, _k(cx, step, r))
        p = cx.op("select", take, cx.op("mul", p, _k(cx, 1 << step, p)), p)
        r = cx.op("select", take, cx.op("sub", r, _k(cx, step, r)), r)
    return p


def _floor_div(cx: TorchContext, a: Value, b: Value, signed: bool) -> Value:
    q = cx.op("div", a, b)
    if not signed:
        return q
    zero = _k(cx, 0, a)
    inexact = cx.op("ne", cx.op("remainder", a, b), zero)
    neg = cx.op("lt", a, zero)   # b > 0 here
    return cx.op("sub", q, cx.cast(cx.op("logical_and", inexact, neg), a.dtype))


def _shift_operands(cx: TorchContext, a: Any, b: Any) -> tuple[Value, Value, int, bool]:
    dt, shape = cx.out_dtype(), cx.out_shape()
    av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
    bits = dt.np_dtype.itemsize * 8
    signed = dt.np_dtype.kind == "i"
    return av, bv, bits, signed


def _split(cx: TorchContext, b: Value, bits: int) -> tuple[Value, Value, Value, int]:
    """(in_range, h, b - h, max factor exponent) for a shift amount b."""
    zero = _k(cx, 0, b)
    ok = cx.op("logical_and", cx.op("ge", b, zero), cx.op("lt", b, _k(cx, bits, b)))
    safe = cx.op("select", ok, b, zero)
    h = cx.op("div", safe, _k(cx, 2, safe))
    return ok, h, cx.op("sub", safe, h), (bits + 1) // 2


@converts("aten.bitwise_left_shift", "aten.__lshift__")
def _left_shift(cx: TorchContext, a: Any, b: Any) -> Value:
    av, bv, bits, _ = _shift_operands(cx, a, b)
    ok, h, rest, top = _split(cx, bv, bits)
    y = cx.op("mul", cx.op("mul", av, pow2(cx, h, top)), pow2(cx, rest, top))
    return cx.op("select", ok, y, _k(cx, 0, av))


@converts("aten.bitwise_right_shift", "aten.__rshift__")
def _right_shift(cx: TorchContext, a: Any, b: Any) -> Value:
    av, bv, bits, signed = _shift_operands(cx, a, b)
    ok, h, rest, top = _split(cx, bv, bits)
    y = _floor_div(cx, _floor_div(cx, av, pow2(cx, h, top), signed), pow2(cx, rest, top), signed)
    zero = _k(cx, 0, av)
    out = cx.op("select", cx.op("lt", av, zero), _k(cx, -1, av), zero) if signed else zero
    return cx.op("select", ok, y, out)


# -- frexp ----------------------------------------------------------------------


@converts("aten.frexp")
def _frexp(cx: TorchContext, x: Value) -> tuple[Value, Value]:
    dt = cx.out_dtype(0)
    x = cx.cast(x, dt)
    fin = cx.op("logical_and", cx.op("eq", x, x),
                cx.op("lt", cx.op("abs", x), _k(cx, math.inf, x)))
    special = cx.op("logical_or", cx.op("logical_not", fin), cx.op("eq", x, _k(cx, 0, x)))
    one = _k(cx, 1, x)
    ax = cx.op("select", special, one, cx.op("abs", x))
    e = cx.op("add", cx.op("floor", cx.op("log2", ax)), one)      # approximately
    m = _scale(cx, ax, cx.op("neg", e))
    # log2's rounding may be one off near a power of two: move m into [0.5, 1)
    half = _k(cx, 0.5, x)
    lo = cx.op("lt", m, half)
    hi = cx.op("ge", m, one)
    e = cx.op("sub", cx.op("add", e, cx.cast(hi, dt)), cx.cast(lo, dt))
    m = cx.op("select", lo, cx.op("mul", m, _k(cx, 2, m)),
              cx.op("select", hi, cx.op("mul", m, half), m))
    m = cx.op("select", cx.op("lt", x, _k(cx, 0, x)), cx.op("neg", m), m)
    mant = cx.op("select", special, x, m)
    exp = cx.cast(cx.op("select", special, _k(cx, 0, e), e), i32)
    return mant, cx.cast(exp, cx.out_dtype(1))


def _scale(cx: TorchContext, x: Value, e: Value) -> Value:
    """x * 2^e for integral float e, exact: two power-of-two factors, each in range."""
    h = cx.op("floor", cx.op("mul", e, _k(cx, 0.5, e)))
    f1 = cx.op("exp2", h)
    f2 = cx.op("exp2", cx.op("sub", e, h))
    return cx.op("mul", cx.op("mul", x, f1), f2)


# -- gcd / lcm ------------------------------------------------------------------


def _euclid_steps(bits: int) -> int:
    """Euclid's worst case (consecutive Fibonacci numbers) for |values| < 2^bits."""
    f0, f1, n = 0, 1, 0
    while f1 < (1 << bits):
        f0, f1, n = f1, f0 + f1, n + 1
    return n


def gcd(cx: TorchContext, a: Value, b: Value) -> Value:
    """torch's gcd: Euclid on the signed values, |last nonzero remainder|. The remainder
    sequence v[k+1] = v[k-1] % v[k] stays 0 after its first 0 (hal's x % 0 is 0), so it
    is unrolled to the dtype's worst-case length keeping the last nonzero term (3 ops a
    step: a remainder, a compare and a select)."""
    bits = a.dtype.np_dtype.itemsize * 8
    zero = _k(cx, 0, a)
    g = cx.op("select", cx.op("ne", b, zero), b, a)
    for _ in range(_euclid_steps(bits)):
        a, b = b, cx.op("remainder", a, b)
        g = cx.op("select", cx.op("ne", b, zero), b, g)
    return cx.op("abs", g)


@converts("aten.gcd")
def _gcd(cx: TorchContext, a: Any, b: Any) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    return gcd(cx, cx.tensor(a, dt, shape), cx.tensor(b, dt, shape))


@converts("aten.lcm")
def _lcm(cx: TorchContext, a: Any, b: Any) -> Value:
    # torch: g == 0 ? 0 : |a / g * b|
    dt, shape = cx.out_dtype(), cx.out_shape()
    av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
    g = gcd(cx, av, bv)
    zero = _k(cx, 0, g)
    nz = cx.op("ne", g, zero)
    q = cx.op("div", av, cx.op("select", nz, g, _k(cx, 1, g)))
    return cx.op("select", nz, cx.op("abs", cx.op("mul", q, bv)), zero)
