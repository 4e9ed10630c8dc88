"""ATen converters for torch.special's Chebyshev polynomials T, U, V, W and their shifted
forms (argument 2x - 1), with a tensor degree n.

torch evaluates them (ATen/native/Math.h) by cases, which this follows:

- n < 0: 0;  |x| = 1: the closed value (+-1, +-(n + 1), +-(2n + 1) by kind and parity);
- |x| < 1 and n above a small bound (6 for T, 8 for the others; 6, 6, 6, 4 shifted):
  the trigonometric
  form, x = cos(theta): T = cos(n theta), U = sin((n+1) theta) / sin(theta),
  V = cos((n+1/2) theta) / cos(theta/2), W = sin((n+1/2) theta) / sin(theta/2);
- otherwise the three-term recurrence P[k+1] = 2x P[k] - P[k-1], which torch runs n
  times. hal unrolls it to RECURRENCE_MAX steps (selecting step n); beyond that, where
  torch would keep iterating on |x| > 1, the hyperbolic form is used: x = +-cosh(t),
  T = cosh(n t), U = sinh((n+1) t) / sinh(t), V = cosh((n+1/2) t) / cosh(t/2),
  W = sinh((n+1/2) t) / sinh(t/2), with T(-x) = (-1)^n T(x), U likewise,
  V(-x) = (-1)^n W(x) and W(-x) = (-1)^n V(x). The two agree up to rounding except
  where the value overflows: torch's loop then turns inf into NaN, hal gives inf.

The degree is truncated to an integer, as torch's static_cast<int64_t>(n) does.
"""

from __future__ import annotations

from typing import Any

from hal.frontends.torch_convert import TorchContext, converts
from hal.ir.graph import Value

RECURRENCE_MAX = 16
_P1 = {"t": (1.0, 0.0), "u": (2.0, 0.0), "v": (2.0, -1.0), "w": (2.0, 1.0)}   # P1 = a x + b
_TRIG_MIN = {"t": 6, "u": 8, "v": 8, "w": 8}
_TRIG_MIN_SHIFTED = {"t": 6, "u": 6, "v": 6, "w": 4}


def _k(cx: TorchContext, v: float, like: Value) -> Value:
    return cx.scalar(v, like.dtype, like.shape)


def _cosh_sinh(cx: TorchContext, z: Value) -> tuple[Value, Value]:
    e = cx.op("exp", z)
    ei = cx.op("exp", cx.op("neg", z))
    half = _k(cx, 0.5, z)
    sinh = cx.op("mul", cx.op("sub", cx.op("expm1", z), cx.op("expm1", cx.op("neg", z))), half)
    return cx.op("mul", cx.op("add", e, ei), half), sinh


def _closed(cx: TorchContext, kind: str, n: Value, a: Value) -> Value:
    """P_n(cosh t) for a = cosh t > 1 (the hyperbolic form; kinds swap V/W for -x)."""
    t = cx.op("log", cx.op("add", a, cx.op("sqrt", cx.op("sub", cx.op("mul", a, a),
                                                           _k(cx, 1, a)))))
    half = _k(cx, 0.5, t)
    if kind == "t":
        return _cosh_sinh(cx, cx.op("mul", n, t))[0]
    if kind == "u":
        return cx.op("div", _cosh_sinh(cx, cx.op("mul", cx.op("add", n, _k(cx, 1, n)), t))[1],
                     _cosh_sinh(cx, t)[1])
    nh = cx.op("mul", cx.op("add", n, half), t)
    ch, sh = _cosh_sinh(cx, nh)
    c2, s2 = _cosh_sinh(cx, cx.op("mul", t, half))
    return cx.op("div", ch, c2) if kind == "v" else cx.op("div", sh, s2)


def chebyshev(cx: TorchContext, kind: str, x: Value, n: Value, trig_min: int) -> Value:
    """torch.special.chebyshev_polynomial_{kind}(x, n) in x's (float) dtype; the
    trigonometric form for |x| < 1 and n > trig_min."""
    one, zero = _k(cx, 1, x), _k(cx, 0, x)
    two = _k(cx, 2, x)
    parity_odd = cx.op("ne", cx.op("remainder", n, two), zero)            # n >= 0 where used
    sgn = cx.op("select", parity_odd, _k(cx, -1, x), one)                 # (-1)^n
    two_n1 = cx.op("add", cx.op("add", n, n), one)
    # the recurrence, step n selected (n in [0, RECURRENCE_MAX])
    a1, b1 = _P1[kind]
    p, q = one, cx.op("add", cx.op("mul", x, _k(cx, a1, x)), _k(cx, b1, x))
    rec = cx.op("select", cx.op("eq", n, zero), p, q)
    x2 = cx.op("add", x, x)
    for k in range(2, RECURRENCE_MAX + 1):
        p, q = q, cx.op("sub", cx.op("mul", x2, q), p)
        rec = cx.op("select", cx.op("eq", n, _k(cx, k, n)), q, rec)
    # |x| < 1, large n: trigonometric form
    ax = cx.op("abs", x)
    inner = cx.op("lt", ax, one)
    th = _acos(cx, cx.op("select", inner, x, zero))
    half = _k(cx, 0.5, th)
    if kind == "t":
        trig = cx.op("cos", cx.op("mul", n, th))
    elif kind == "u":
        s = cx.op("sin", th)
        np1 = cx.op("add", n, one)
        main = cx.op("div", cx.op("sin", cx.op("mul", np1, th)), s)
        alt = cx.op("div", cx.op("mul", np1, cx.op("cos", cx.op("mul", np1, th))), x)
        trig = cx.op("select", cx.op("ne", s, zero), main, alt)
    elif kind == "v":
        trig = cx.op("div", cx.op("cos", cx.op("mul", cx.op("add", n, half), th)),
                     cx.op("cos", cx.op("mul", th, half)))
    else:
        trig = cx.op("div", cx.op("sin", cx.op("mul", cx.op("add", n, half), th)),
                     cx.op("sin", cx.op("mul", th, half)))
    # |x| > 1, n past the unrolled recurrence: hyperbolic form
    safe_a = cx.op("select", cx.op("gt", ax, one), ax, two)
    flip = {"t": "t", "u": "u", "v": "w", "w": "v"}[kind]
    hyp_pos = _closed(cx, kind, n, safe_a)
    hyp_neg = cx.op("mul", sgn, _closed(cx, flip, n, safe_a))
    hyp = cx.op("select", cx.op("gt", x, zero), hyp_pos, hyp_neg)
    # |x| == 1
    pos_val, neg_even, neg_odd = {"t": (one, one, _k(cx, -1, x)),
                                  "u": (cx.op("add", n, one), cx.op("add", n, one),
                                        cx.op("neg", cx.op("add", n, one))),
                                  "v": (one, two_n1, cx.op("neg", two_n1)),
                                  "w": (two_n1, one, _k(cx, -1, x))}[kind]
    at_one = cx.op("select", cx.op("gt", x, zero), pos_val,
                   cx.op("select", parity_odd, neg_odd, neg_even))
    big_n = cx.op("gt", n, _k(cx, RECURRENCE_MAX, n))
    y = cx.op("select", big_n, hyp, rec)
    y = cx.op("select", cx.op("logical_and", inner, cx.op("gt", n, _k(cx, trig_min, n))),
              trig, y)
    y = cx.op("select", cx.op("eq", ax, one), at_one, y)
    return cx.op("select", cx.op("lt", n, zero), zero, y)


def _acos(cx: TorchContext, x: Value) -> Value:
    # acos(x) = 2 atan(sqrt((1 - x) / (1 + x))) for x in (-1, 1)
    from hal.frontends.torch_ops_math import atan

    one = _k(cx, 1, x)
    r = cx.op("sqrt", cx.op("div", cx.op("sub", one, x), cx.op("add", one, x)))
    return cx.op("mul", atan(cx, r), _k(cx, 2, x))


def _convert(kind: str, shifted: bool):
    def convert(cx: TorchContext, x: Any, n: Any) -> Value:
        dt, shape = cx.out_dtype(), cx.out_shape()
        xv, nv = cx.tensor(x, dt, shape), cx.tensor(n, dt, shape)
        nv = cx.op("select", cx.op("lt", nv, _k(cx, 0, nv)), cx.op("ceil", nv),
                   cx.op("floor", nv))                              # truncate toward 0
        if shifted:
            xv = cx.op("sub", cx.op("add", xv, xv), _k(cx, 1, xv))
        return chebyshev(cx, kind, xv, nv, (_TRIG_MIN_SHIFTED if shifted else _TRIG_MIN)[kind])
    return convert


for _kind in "tuvw":
    converts(f"aten.special_chebyshev_polynomial_{_kind}")(_convert(_kind, False))
    converts(f"aten.special_shifted_chebyshev_polynomial_{_kind}")(_convert(_kind, True))

__all__ = ["chebyshev", "RECURRENCE_MAX"]
