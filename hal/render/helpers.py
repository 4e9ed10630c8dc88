"""C helper functions shared by every C-style vendor: exact integer ops, NaN rules, fp8, casts.

Each helper is plain C++ (device code, no vendor header) generated from data, so CUDA and
HIP emit the same text and follow hal's scalar rules (hal.dtypes, hal.ops.elementwise):

* `hal_div_T` / `hal_rem_T`: truncated integer division and C remainder, x/0 = 0 and x%0 = 0,
  INT_MIN / -1 wraps (two's complement) instead of trapping;
* `hal_max_T` / `hal_min_T`: NaN-propagating for floats (fmaxf does not propagate);
* `hal_sign_T`, `hal_abs_T`, `hal_pow_T` (integer power by squaring, |b| as exponent);
* `hal_f2i_T`: float -> integer, truncate, saturate, NaN -> 0 (PTX cvt.rzi.sat);
* `hal_f64_to_f32_odd`: f64 -> f32 with round-to-odd, so that a second rounding to a
  16- or 8-bit float is still correctly rounded (one RNE rounding overall);
* `hal_f32_to_<fp8>` / `hal_<fp8>_to_f32`: OCP fp8 (e4m3fn, e5m2) with RNE and the
  satfinite rule (beyond max -> +-max, NaN stays NaN), integer-only bit manipulation.

A renderer asks for a helper with `Helpers.need(kind, dtype)`; only helpers that a
kernel uses are emitted, in dependency order, before the kernels.
"""

from __future__ import annotations

from collections.abc import Callable

from hal.dtypes import DType, f32, f64

# OCP fp8 formats: mantissa bits, exponent bias, largest finite code (sign bit clear).
FP8_FORMATS: dict[str, tuple[int, int, int]] = {
    "f8e4m3fn": (3, 7, 0x7E),
    "f8e5m2": (2, 15, 0x7B),
}


def _int_range(d: DType) -> tuple[str, str]:
    if d.kind == "uint":
        return "0", f"{d.max}"
    suffix = "LL" if d.bits == 64 else ""
    return f"({-d.max}{suffix} - 1)", f"{d.max}{suffix}"


def _div(c: str, d: DType) -> str:
    t = d.name
    neg = "" if d.kind == "uint" else (
        f"  if (b == ({c})-1) return ({c})(0ULL - (unsigned long long)a);  // wraps at MIN\n")
    return (f"HAL_FN {c} hal_div_{t}({c} a, {c} b) {{\n  if (b == 0) return 0;\n{neg}"
            f"  return ({c})(a / b);\n}}\n")


def _rem(c: str, d: DType) -> str:
    neg = "" if d.kind == "uint" else "  if (b == -1) return 0;\n"
    return (f"HAL_FN {c} hal_rem_{d.name}({c} a, {c} b) {{\n  if (b == 0) return 0;\n{neg}"
            f"  return ({c})(a % b);\n}}\n")


def _minmax(which: str) -> Callable[[str, DType], str]:
    op = ">" if which == "max" else "<"

    def gen(c: str, d: DType) -> str:
        if d.is_float:  # NaN in either operand gives NaN (a + b is NaN then)
            body = f"return (a != a || b != b) ? a + b : (a {op} b ? a : b);"
        else:
            body = f"return a {op} b ? a : b;"
        return f"HAL_FN {c} hal_{which}_{d.name}({c} a, {c} b) {{ {body} }}\n"
    return gen


def _sign(c: str, d: DType) -> str:
    if d.is_float:  # sign(-0) = +0 as np.sign (hal's definition); NaN stays NaN
        body = f"return a > 0 ? ({c})1 : (a < 0 ? ({c})-1 : (a == 0 ? ({c})0 : a));"
    else:
        body = f"return ({c})((a > 0) - (a < 0));"
    return f"HAL_FN {c} hal_sign_{d.name}({c} a) {{ {body} }}\n"


def _abs(c: str, d: DType) -> str:
    if d.kind == "uint":
        return f"HAL_FN {c} hal_abs_{d.name}({c} a) {{ return a; }}\n"
    return (f"HAL_FN {c} hal_abs_{d.name}({c} a) "
            f"{{ return a < 0 ? ({c})(0ULL - (unsigned long long)a) : a; }}\n")


def _pow(c: str, d: DType) -> str:
    neg = "" if d.kind == "uint" else "  if (b < 0) b = hal_abs_" + d.name + "(b);\n"
    return (f"HAL_FN {c} hal_pow_{d.name}({c} a, {c} b) {{\n{neg}"
            "  unsigned long long r = 1, x = (unsigned long long)a, e = (unsigned long long)b;\n"
            "  while (e) { if (e & 1) r *= x; x *= x; e >>= 1; }\n"
            f"  return ({c})r;\n}}\n")


def _f2i(c: str, d: DType) -> str:
    lo, hi = _int_range(d)
    # bounds as doubles: hi + 1 is a power of two, exact in f64
    top = float(d.max) + 1.0
    bottom = float(d.min)
    return (f"HAL_FN {c} hal_f2i_{d.name}(double v) {{\n"
            f"  if (v != v) return 0;\n  if (v >= {top!r}) return {hi};\n"
            f"  if (v <= {bottom!r}) return {lo};\n  return ({c})v;\n}}\n")


F64_TO_F32_ODD = """\
HAL_FN float hal_f64_to_f32_odd(double d) {
  // Round to f32 with round-to-odd: a later RNE rounding to <= 22 significant bits is then
  // correctly rounded. Values outside f32's normal range take the plain conversion.
  unsigned long long u = (unsigned long long)__double_as_longlong(d);
  int e = (int)((u >> 52) & 0x7ff) - 1023;
  if (e < -126 || e > 127) return (float)d;
  unsigned int sticky = (u & ((1ULL << 29) - 1)) != 0;
  unsigned int bits = (unsigned int)((u >> 32) & 0x80000000u) | ((unsigned int)(e + 127) << 23)
      | (unsigned int)((u >> 29) & 0x7fffff) | sticky;
  return __int_as_float((int)bits);
}
"""


def _fp8_encode(name: str) -> str:
    m, bias, maxcode = FP8_FORMATS[name]
    shift = 23 - m
    return f"""\
HAL_FN unsigned char hal_f32_to_{name}(float f) {{
  // RNE, satfinite: |f| beyond the largest finite value gives +-max; NaN gives NaN.
  unsigned int u = (unsigned int)__float_as_int(f);
  unsigned char sign = (unsigned char)((u >> 24) & 0x80);
  unsigned int a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (unsigned char)(sign | 0x7f);
  unsigned int code;
  if (a < {(127 + 1 - bias) << 23}u) {{  // below the smallest normal: count subnormal steps
    code = (unsigned int)rintf(__int_as_float((int)a) * {2.0 ** (m - (1 - bias))!r}f);
  }} else {{
    unsigned int r = a + {(1 << (shift - 1)) - 1}u + ((a >> {shift}) & 1u);
    code = (r >> {shift}) - {(127 - bias) << m}u;
  }}
  if (code > {maxcode}u) code = {maxcode}u;
  return (unsigned char)(sign | code);
}}
"""


def _fp8_decode(name: str) -> str:
    m, bias, _ = FP8_FORMATS[name]
    nan_test = "(c & 0x7f) == 0x7f" if name == "f8e4m3fn" else "(c & 0x7f) > 0x7c"
    inf = "" if name == "f8e4m3fn" else (
        "  if ((c & 0x7f) == 0x7c) return __int_as_float((int)(sign | 0x7f800000u));\n")
    return f"""\
HAL_FN float hal_{name}_to_f32(unsigned char c) {{
  unsigned int sign = (unsigned int)(c & 0x80) << 24;
  if ({nan_test}) return __int_as_float(0x7fc00000);
{inf}  unsigned int e = (c >> {m}) & {(1 << (7 - m)) - 1}u, f = c & {(1 << m) - 1}u;
  if (e == 0) {{
    float v = (float)f * {2.0 ** (1 - bias - m)!r}f;
    return sign ? -v : v;
  }}
  return __int_as_float((int)(sign | ((e + {127 - bias}u) << 23) | (f << {23 - m})));
}}
"""


# kind -> generator(c_type, dtype) for helpers defined for any dtype
TYPED_HELPERS: dict[str, Callable[[str, DType], str]] = {
    "div": _div, "rem": _rem, "max": _minmax("max"), "min": _minmax("min"),
    "sign": _sign, "abs": _abs, "pow": _pow, "f2i": _f2i,
}
# helpers that other helpers call
DEPENDS: dict[str, tuple[str, ...]] = {"pow": ("abs",)}


class Helpers:
    """The helpers one translation unit needs, collected while rendering."""

    def __init__(self, type_name: Callable[[DType], str]):
        self._type_name = type_name
        self._order: list[tuple[str, str]] = []

    def need(self, kind: str, dtype: DType | None = None) -> None:
        for dep in DEPENDS.get(kind, ()):
            self.need(dep, dtype)
        key = (kind, dtype.name if dtype is not None else "")
        if key not in self._order:
            self._order.append(key)
        self._dtypes = getattr(self, "_dtypes", {})
        if dtype is not None:
            self._dtypes[dtype.name] = dtype

    def source(self) -> str:
        out = []
        for kind, dname in self._order:
            if kind == "f64_to_f32_odd":
                out.append(F64_TO_F32_ODD)
            elif kind == "fp8_encode":
                out.append(_fp8_encode(dname))
            elif kind == "fp8_decode":
                out.append(_fp8_decode(dname))
            else:
                d = self._dtypes[dname]
                out.append(TYPED_HELPERS[kind](self._type_name(d), d))
        return "\n".join(out)


def compute_type(d: DType) -> DType:
    """The type C code computes `d` in: f32 for 16- and 8-bit floats, else `d` itself."""
    return f32 if d.is_float and d.bits < 32 else d


__all__ = ["FP8_FORMATS", "Helpers", "TYPED_HELPERS", "compute_type", "f64"]


def vec_copy_helper(nbytes: int) -> str:
    """The `hal_vec_copy_<nbytes>` device helper (a VecCopy of 16/8/4/2 bytes, zero-filled
    where `full` is false): the same text for CUDA and HIP."""
    t = {16: "uint4", 8: "uint2", 4: "unsigned", 2: "unsigned short"}[nbytes]
    zero = {16: "make_uint4(0u, 0u, 0u, 0u)", 8: "make_uint2(0u, 0u)"}.get(nbytes, "0")
    return (f"HAL_FN void hal_vec_copy_{nbytes}(void* dst, const void* src, bool full) {{\n"
            f"  {t} v = {zero};\n  if (full) v = *reinterpret_cast<const {t}*>(src);\n"
            f"  *reinterpret_cast<{t}*>(dst) = v;\n}}\n")
