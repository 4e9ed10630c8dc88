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

Also the Cephes functions torch implements by rational or Chebyshev approximations per
range (`bessel_j1`, `scaled_modified_bessel_k0`, `ndtri`): the same coefficients and
cases as torch's ATen/native/Math.h (`bessel_j1_forward`,
`scaled_modified_bessel_k0_forward` with `modified_bessel_i0_forward`, `calc_ndtri`),
evaluated in the output dtype as torch does, every range computed and the right one
selected per element.
"""

from __future__ import annotations

import math
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


# -- Cephes approximations (coefficients as in torch's ATen/native/Math.h) ---------------

_J1_PP = (0.0007621256162081731, 0.07313970569409176, 1.1271960812968493, 5.112079511468076,
          8.424045901417724, 5.214515986823615, 1.0)
_J1_PQ = (0.0005713231280725487, 0.06884559087544954, 1.105142326340617, 5.073863861286015,
          8.399855543276042, 5.209828486823619, 1.0)
_J1_QP = (0.05108625947501766, 4.982138729512334, 75.82382841325453, 366.7796093601508,
          710.8563049989261, 597.4896124006136, 211.68875710057213, 25.207020585802372)
_J1_QQ = (74.23732770356752, 1056.4488603826283, 4986.410583376536, 9562.318924047562,
          7997.041604473507, 2826.1927851763908, 336.0936078106983)
_J1_RP = (-899971225.7055594, 452228297998.19403, -72749424522181.83, 3682957328638529.0)
_J1_RQ = (620.8364781180543, 256987.25675774884, 83514679.14319493, 22151159547.97925,
          4749141220799.914, 784369607876235.9, 8.952223361846274e+16, 5.322786203326801e+18)
_K0_A = (1.374465435613523e-16, 4.25981614279661e-14, 1.0349695257633842e-11,
         1.904516377220209e-09, 2.5347910790261494e-07, 2.286212103119452e-05,
         0.001264615411446926, 0.0359799365153615, 0.3442898999246285, -0.5353273932339028)
_K0_B = (5.300433772686263e-18, -1.6475804301524212e-17, 5.2103915050390274e-17,
         -1.678231096805412e-16, 5.512055978524319e-16, -1.848593377343779e-15,
         6.3400764774050706e-15, -2.2275133269916698e-14, 8.032890775363575e-14,
         -2.9800969231727303e-13, 1.140340588208475e-12, -4.514597883373944e-12,
         1.8559491149547177e-11, -7.957489244477107e-11, 3.577397281400301e-10,
         -1.69753450938906e-09, 8.574034017414225e-09, -4.660489897687948e-08,
         2.766813639445015e-07, -1.8317555227191195e-06, 1.39498137188765e-05,
         -0.00012849549581627802, 0.0015698838857300533, -0.0314481013119645, 2.4403030820659555)
_I0_A = (-4.4153416464793395e-18, 3.3307945188222384e-17, -2.431279846547955e-16,
         1.715391285555133e-15, -1.1685332877993451e-14, 7.676185498604936e-14,
         -4.856446783111929e-13, 2.95505266312964e-12, -1.726826291441556e-11,
         9.675809035373237e-11, -5.189795601635263e-10, 2.6598237246823866e-09,
         -1.300025009986248e-08, 6.046995022541919e-08, -2.670793853940612e-07,
         1.1173875391201037e-06, -4.4167383584587505e-06, 1.6448448070728896e-05,
         -5.754195010082104e-05, 0.00018850288509584165, -0.0005763755745385824,
         0.0016394756169413357, -0.004324309995050576, 0.010546460394594998,
         -0.02373741480589947, 0.04930528423967071, -0.09490109704804764, 0.17162090152220877,
         -0.3046826723431984, 0.6767952744094761)
_I0_B = (-7.233180487874754e-18, -4.830504485944182e-18, 4.46562142029676e-17,
         3.461222867697461e-17, -2.8276239805165836e-16, -3.425485619677219e-16,
         1.7725601330565263e-15, 3.8116806693526224e-15, -9.554846698828307e-15,
         -4.150569347287222e-14, 1.54008621752141e-14, 3.8527783827421426e-13,
         7.180124451383666e-13, -1.7941785315068062e-12, -1.3215811840447713e-11,
         -3.1499165279632416e-11, 1.1889147107846439e-11, 4.94060238822497e-10,
         3.3962320257083865e-09, 2.266668990498178e-08, 2.0489185894690638e-07,
         2.8913705208347567e-06, 6.889758346916825e-05, 0.0033691164782556943,
         0.8044904110141088)
_NDTRI_P0 = (-59.96335010141079, 98.00107541859997, -56.67628574690703, 13.931260938727968,
             -1.2391658386738125)
_NDTRI_Q0 = (1.0, 1.9544885833814176, 4.676279128988815, 86.36024213908905, -225.46268785411937,
             200.26021238006066, -82.03722561683334, 15.90562251262117, -1.1833162112133)
_NDTRI_P1 = (4.0554489230596245, 31.525109459989388, 57.16281922464213, 44.08050738932008,
             14.684956192885803, 2.1866330685079025, -0.1402560791713545, -0.03504246268278482,
             -0.0008574567851546854)
_NDTRI_Q1 = (1.0, 15.779988325646675, 45.39076351288792, 41.3172038254672, 15.04253856929075,
             2.504649462083094, -0.14218292285478779, -0.03808064076915783,
             -0.0009332594808954574)
_NDTRI_P2 = (3.2377489177694603, 6.915228890689842, 3.9388102529247444, 1.3330346081580755,
             0.20148538954917908, 0.012371663481782003, 0.00030158155350823543,
             2.6580697468673755e-06, 6.239745391849833e-09)
_NDTRI_Q2 = (1.0, 6.02427039364742, 3.6798356385616087, 1.3770209948908132, 0.21623699359449663,
             0.013420400608854318, 0.00032801446468212774, 2.8924786474538068e-06,
             6.790194080099813e-09)


def _polevl(cx: TorchContext, x: Value, coeffs: tuple[float, ...]) -> Value:
    """Horner: coeffs[0] x^(n-1) + ... + coeffs[n-1] (Cephes polevl)."""
    acc = _k(cx, coeffs[0], x)
    for c in coeffs[1:]:
        acc = cx.op("add", cx.op("mul", acc, x), _k(cx, c, x))
    return acc


def _chbevl(cx: TorchContext, y: Value, coeffs: tuple[float, ...]) -> Value:
    """Cephes chbevl: the Chebyshev series sum at y (the Clenshaw recurrence torch runs)."""
    a, q, p = _k(cx, coeffs[0], y), _k(cx, 0, y), _k(cx, 0, y)
    for c in coeffs[1:]:
        p, q = q, a
        a = cx.op("add", cx.op("sub", cx.op("mul", y, q), p), _k(cx, c, y))
    return cx.op("mul", cx.op("sub", a, p), _k(cx, 0.5, y))


def bessel_j1(cx: TorchContext, x: Value) -> Value:
    """J1(x): odd; a rational in x^2 times the two zeros' factors on [0, 5], the
    asymptotic form P cos(x - 3pi/4) - (5/x) Q sin(x - 3pi/4) beyond."""
    ax = cx.op("abs", x)
    x2 = cx.op("mul", ax, ax)
    small = cx.op("mul", cx.op("mul", cx.op("div", _polevl(cx, x2, _J1_RP),
                                                _polevl(cx, x2, _J1_RQ)), ax),
                  cx.op("mul", cx.op("sub", x2, _k(cx, 1.46819706421238932572e01, x)),
                        cx.op("sub", x2, _k(cx, 4.92184563216946036703e01, x))))
    big_x = cx.op("select", cx.op("le", ax, _k(cx, 5, x)), _k(cx, 10, x), ax)   # NaN stays
    w = cx.op("div", _k(cx, 5, x), big_x)
    w2 = cx.op("mul", w, w)
    pp = cx.op("div", _polevl(cx, w2, _J1_PP), _polevl(cx, w2, _J1_PQ))
    qq = cx.op("mul", w, cx.op("div", _polevl(cx, w2, _J1_QP), _polevl(cx, w2, _J1_QQ)))
    ph = cx.op("sub", big_x, _k(cx, 2.356194490192344928846982537459627163, x))
    big = cx.op("div", cx.op("mul", cx.op("sub", cx.op("mul", pp, cx.op("cos", ph)),
                                          cx.op("mul", qq, cx.op("sin", ph))),
                             _k(cx, 0.797884560802865355879892119868763737, x)),
                cx.op("sqrt", big_x))
    y = cx.op("select", cx.op("le", ax, _k(cx, 5, x)), small, big)
    return cx.op("select", cx.op("lt", x, _k(cx, 0, x)), cx.op("neg", y), y)


def scaled_modified_bessel_k0(cx: TorchContext, x: Value) -> Value:
    """exp(x) K0(x): on (0, 2] the series in x^2 - 2 minus log(x/2) I0(x), times exp(x);
    beyond, a Chebyshev series in 8/x - 2 over sqrt(x). inf at 0, NaN below."""
    zero, two = _k(cx, 0, x), _k(cx, 2, x)
    small_x = cx.op("select", cx.op("logical_and", cx.op("gt", x, zero), cx.op("le", x, two)),
                    x, _k(cx, 1, x))
    half_x = cx.op("mul", small_x, _k(cx, 0.5, x))
    i0 = cx.op("mul", cx.op("exp", small_x),
               _chbevl(cx, cx.op("sub", half_x, two), _I0_A))            # |x| <= 8 branch
    series = _chbevl(cx, cx.op("sub", cx.op("mul", small_x, small_x), two), _K0_A)
    small = cx.op("mul", cx.op("sub", series, cx.op("mul", cx.op("log", half_x), i0)),
                  cx.op("exp", small_x))
    big_x = cx.op("select", cx.op("le", x, two), _k(cx, 4, x), x)
    big = cx.op("div", _chbevl(cx, cx.op("sub", cx.op("div", _k(cx, 8, x), big_x), two), _K0_B),
                cx.op("sqrt", big_x))
    y = cx.op("select", cx.op("le", x, two), small, cx.op("select", cx.op("gt", x, two), big, x))
    y = cx.op("select", cx.op("lt", x, zero), _k(cx, math.nan, x), y)
    return cx.op("select", cx.op("eq", x, zero), _k(cx, math.inf, x), y)


def ndtri(cx: TorchContext, y0: Value) -> Value:
    """The inverse of the standard normal CDF (Cephes ndtri): a rational in (y - 1/2)^2
    around the centre, rationals in 1/sqrt(-2 log y) in the tails."""
    one, zero = _k(cx, 1, y0), _k(cx, 0, y0)
    e2 = 0.13533528323661269189                                          # exp(-2)
    code = cx.op("logical_not", cx.op("gt", y0, cx.op("sub", one, _k(cx, e2, y0))))
    y = cx.op("select", code, y0, cx.op("sub", one, y0))
    centre = cx.op("gt", y, _k(cx, e2, y0))
    # |y - 1/2| <= 3/8
    c = cx.op("sub", cx.op("select", centre, y, _k(cx, 0.5, y0)), _k(cx, 0.5, y0))
    c2 = cx.op("mul", c, c)
    mid = cx.op("add", c, cx.op("mul", c, cx.op("div", cx.op("mul", c2, _polevl(cx, c2, _NDTRI_P0)),
                                                _polevl(cx, c2, _NDTRI_Q0))))
    mid = cx.op("mul", mid, _k(cx, 2.50662827463100050242, y0))
    # tails: x = sqrt(-2 log y), y in (0, exp(-2)]
    ty = cx.op("select", centre, _k(cx, 0.01, y0), y)       # 0 or < 0: replaced below
    t = cx.op("sqrt", cx.op("mul", _k(cx, -2, y0), cx.op("log", ty)))
    x0 = cx.op("sub", t, cx.op("div", cx.op("log", t), t))
    z = cx.op("div", one, t)
    near = cx.op("div", cx.op("mul", z, _polevl(cx, z, _NDTRI_P1)), _polevl(cx, z, _NDTRI_Q1))
    far = cx.op("div", cx.op("mul", z, _polevl(cx, z, _NDTRI_P2)), _polevl(cx, z, _NDTRI_Q2))
    tail = cx.op("sub", x0, cx.op("select", cx.op("lt", t, _k(cx, 8, y0)), near, far))
    tail = cx.op("select", code, cx.op("neg", tail), tail)
    out = cx.op("select", centre, mid, tail)
    bad = cx.op("logical_or", cx.op("lt", y0, zero), cx.op("gt", y0, one))
    out = cx.op("select", bad, _k(cx, math.nan, y0), out)
    out = cx.op("select", cx.op("eq", y0, one), _k(cx, math.inf, y0), out)
    return cx.op("select", cx.op("eq", y0, zero), _k(cx, -math.inf, y0), out)


def _unary(fn):
    def convert(cx: TorchContext, x: Any) -> Value:
        dt = cx.out_dtype()
        return fn(cx, cx.tensor(x, dt, cx.out_shape()))
    return convert


converts("aten.special_bessel_j1")(_unary(bessel_j1))
converts("aten.special_scaled_modified_bessel_k0")(_unary(scaled_modified_bessel_k0))
converts("aten.special_ndtri")(_unary(ndtri))

__all__ = ["chebyshev", "RECURRENCE_MAX", "bessel_j1", "scaled_modified_bessel_k0", "ndtri"]
