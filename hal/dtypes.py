"""hal's scalar types: names, NumPy representations, numerics and exact casts.

One `DType` per storage type. bf16 and the two OCP fp8 formats are represented
with ml_dtypes. `cast` is the single definition of how a value becomes a dtype;
the simulator, the reference executor and the C renderers all follow it:

* float -> float: round to nearest, ties to even. f16/bf16/f32 overflow to inf
  (IEEE). fp8 casts saturate (the ``satfinite`` rule of PTX ``cvt`` and of
  Transformer Engine): a finite or infinite value beyond the largest finite
  magnitude becomes +-max; NaN stays NaN.
* float -> integer: truncate toward zero, saturate to the integer range, NaN
  becomes 0 (PTX ``cvt.rzi.sat``).
* integer -> integer: two's-complement wrap, as C does.
* anything -> bool: nonzero is true; bool -> number gives 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from hal.errors import HalError


@dataclass(frozen=True)
class DType:
    """A storage scalar type."""

    name: str
    np_dtype: np.dtype
    kind: str  # "float", "int", "uint", "bool"
    bits: int
    mantissa_bits: int = 0  # explicit fraction bits, floats only

    @property
    def itemsize(self) -> int:
        return max(1, self.bits // 8)

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "uint")

    @property
    def is_bool(self) -> bool:
        return self.kind == "bool"

    @property
    def unit_roundoff(self) -> float:
        """u = 2^-(p) where p is the number of significand bits incl. the hidden one."""
        if not self.is_float:
            return 0.0
        return 2.0 ** -(self.mantissa_bits + 1)

    @property
    def max(self) -> float | int:
        if self.is_float:
            return float(ml_dtypes.finfo(self.np_dtype).max)
        if self.is_bool:
            return 1
        return int(np.iinfo(self.np_dtype).max)

    @property
    def min(self) -> float | int:
        if self.is_float:
            return float(ml_dtypes.finfo(self.np_dtype).min)
        if self.is_bool:
            return 0
        return int(np.iinfo(self.np_dtype).min)

    @property
    def tiny(self) -> float:
        """Smallest positive normal value (floats only)."""
        return float(ml_dtypes.finfo(self.np_dtype).tiny) if self.is_float else 1.0

    @property
    def has_inf(self) -> bool:
        return self.is_float and self.name != "f8e4m3fn"

    @property
    def saturates(self) -> bool:
        """Casts into this type clamp to +-max instead of producing inf."""
        return self.name.startswith("f8")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"dtype({self.name})"


def _d(name, npd, kind, bits, mant=0) -> DType:
    return DType(name, np.dtype(npd), kind, bits, mant)


f64 = _d("f64", np.float64, "float", 64, 52)
f32 = _d("f32", np.float32, "float", 32, 23)
f16 = _d("f16", np.float16, "float", 16, 10)
bf16 = _d("bf16", ml_dtypes.bfloat16, "float", 16, 7)
f8e4m3fn = _d("f8e4m3fn", ml_dtypes.float8_e4m3fn, "float", 8, 3)
f8e5m2 = _d("f8e5m2", ml_dtypes.float8_e5m2, "float", 8, 2)
i64 = _d("i64", np.int64, "int", 64)
i32 = _d("i32", np.int32, "int", 32)
i16 = _d("i16", np.int16, "int", 16)
i8 = _d("i8", np.int8, "int", 8)
u8 = _d("u8", np.uint8, "uint", 8)
bool_ = _d("bool", np.bool_, "bool", 8)

DTYPES: dict[str, DType] = {
    d.name: d for d in (f64, f32, f16, bf16, f8e4m3fn, f8e5m2, i64, i32, i16, i8, u8, bool_)
}
FLOAT_DTYPES = tuple(d for d in DTYPES.values() if d.is_float)
_FLOAT_NP_DTYPES = frozenset(d.np_dtype for d in FLOAT_DTYPES)   # (cast: built once)
INT_DTYPES = tuple(d for d in DTYPES.values() if d.is_int)
LOW_PRECISION_FLOATS = (f16, bf16, f8e4m3fn, f8e5m2)

_ALIASES = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
    "half": "f16", "float": "f32", "double": "f64",
    "float8_e4m3fn": "f8e4m3fn", "float8_e5m2": "f8e5m2",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8",
    "bool_": "bool",
}


def dtype(name_or_dtype: str | DType | np.dtype | type) -> DType:
    """Look up a DType by hal name, common alias or NumPy dtype."""
    if isinstance(name_or_dtype, DType):
        return name_or_dtype
    if isinstance(name_or_dtype, str):
        key = _ALIASES.get(name_or_dtype, name_or_dtype)
        if key in DTYPES:
            return DTYPES[key]
        raise HalError(f"unknown dtype '{name_or_dtype}'",
                       hint="use one of " + ", ".join(DTYPES))
    npd = np.dtype(name_or_dtype)
    for d in DTYPES.values():
        if d.np_dtype == npd:
            return d
    raise HalError(f"no hal dtype for NumPy dtype {npd}")


def compute_dtype(d: DType) -> DType:
    """The type arithmetic on `d` is carried out in: 16-bit and fp8 floats compute in f32."""
    if d.is_float and d.bits < 32:
        return f32
    return d


def promote(a: DType, b: DType) -> DType:
    """The result type of a binary op on `a` and `b` (hal requires equal types; see ops)."""
    if a == b:
        return a
    raise HalError(f"dtypes {a} and {b} differ", hint="insert an explicit cast")


def cast(x: np.ndarray | float | int, to: DType) -> np.ndarray:
    """Convert `x` to `to` following hal's cast rules (module docstring)."""
    a = np.asarray(x)
    if to.is_bool:
        return (a != 0) if a.dtype != np.bool_ else a.copy()
    if a.dtype == np.bool_:
        return a.astype(to.np_dtype)
    src_float = a.dtype.kind == "f" or a.dtype in _FLOAT_NP_DTYPES
    if to.is_float:
        if to.saturates:
            wide = a.astype(np.float64)
            wide = np.where(np.isnan(wide), wide, np.clip(wide, to.min, to.max))
            return wide.astype(to.np_dtype)
        if a.dtype in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.bfloat16):
            a = a.astype(np.float32)  # exact: these all embed in f32
        with np.errstate(over="ignore", invalid="ignore"):
            if to == bf16 and a.dtype == np.float64 and a.size >= _BF16_VIA_F32_MIN:
                return _f64_to_bf16(a)
            return a.astype(to.np_dtype)
    # integer target
    if src_float:
        wide = a.astype(np.float64)
        with np.errstate(invalid="ignore"):
            t = np.trunc(np.nan_to_num(wide, nan=0.0, posinf=to.max, neginf=to.min))
            t = np.clip(t, float(to.min), float(to.max))
            if to.bits == 64:
                # float64 cannot represent 2^63 - 1: clamp in the integer domain.
                out = np.where(t >= 2.0**63, to.max, t.astype(np.int64) if t.size else t)
                return np.asarray(out).astype(to.np_dtype)
            return t.astype(to.np_dtype)
    return a.astype(to.np_dtype)  # int -> int wraps, as numpy does


_BF16_VIA_F32_MIN = 1 << 16


def _f64_to_bf16(a: np.ndarray) -> np.ndarray:
    """float64 -> bfloat16, rounded to nearest even exactly as `astype(bfloat16)` (which
    is 2-3x slower on model weights): through float32 (fast conversions), then the
    elements where that double rounding can differ - the float32 value lies exactly
    halfway between two bf16 values (low 16 bits 0x8000) - again from float64. Any other
    float32 value lies on the same side of every bf16 midpoint as the float64 one."""
    f = a.astype(np.float32, order="C")
    out = f.astype(ml_dtypes.bfloat16)
    ties = np.flatnonzero((f.view(np.uint32) & np.uint32(0xFFFF)) == np.uint32(0x8000))
    if ties.size:
        out.reshape(-1)[ties] = a.reshape(-1)[ties].astype(ml_dtypes.bfloat16)
    return out


def narrow(x: np.ndarray, to: DType) -> np.ndarray:
    """float64 `x` whose values are all `to`'s (round_to's results: the reference's wide
    form) in `to`'s own dtype: `cast(x, to)`, bit for bit. For bf16 the float32 of each
    value is exact and its upper 16 bits are the bfloat16 (no rounding pass and no ties
    check: ~4x faster than the cast on a layer's activations)."""
    a = np.asarray(x)
    if to == bf16 and a.dtype == np.float64 and np.little_endian and a.ndim and a.size:
        f = np.ascontiguousarray(a, dtype=np.float32)
        return f.view(np.uint16)[..., 1::2].copy().view(ml_dtypes.bfloat16)
    return cast(a, to)


@dataclass(frozen=True)
class _BitsRounding:
    """Round-to-nearest-even of float64 values to a narrower binary float, done on the
    float64 bits: the target's normal values are float64 values whose fraction ends in
    `shift` zero bits, inside the target's exponent range."""

    shift: int        # float64 fraction bits the target drops: 52 - mantissa_bits
    low_bits: int     # magnitude bits of the target's smallest normal value
    over_bits: int    # magnitude bits from which a rounded value overflows to inf

    @property
    def round_over_bits(self) -> int:
        """Magnitude bits from which a value rounds to inf: the midpoint between the
        largest finite value and 2^(emax+1) (a tie goes to the even neighbour: inf)."""
        return self.over_bits - (1 << (self.shift - 1))


def _bits_rounding(d: DType, emin: int, emax: int) -> _BitsRounding:
    return _BitsRounding(52 - d.mantissa_bits, (emin + 1023) << 52, (emax + 1 + 1023) << 52)


# Only IEEE-style targets with inf (no saturation): fp8 keeps `cast`'s clamp.
_BITS_ROUNDING: dict[DType, _BitsRounding] = {
    bf16: _bits_rounding(bf16, -126, 127),
    f16: _bits_rounding(f16, -14, 15),
}
_ROUND_CHUNK = 1 << 15        # elements per pass: the temporaries stay in L2
_MAGNITUDE = np.uint64((1 << 63) - 1)


def round_to(x: np.ndarray, to: DType, out: np.ndarray | None = None) -> np.ndarray:
    """`x` rounded to `to` and returned in float64 (the reference's wide form):
    bit-identical to ``cast(x, to).astype(np.float64)``. float64 input rounded to bf16 or
    f16 is rounded on its bits, chunk by chunk (10x faster than the cast and back on a
    layer's activations, and no narrow copy), to f32 through float32; `out` (float64,
    x's shape; may be `x` itself) receives the result in place of a new array."""
    a = np.asarray(x)
    if to == f32 and a.dtype == np.float64:   # float32's own conversion rounds the same
        return _round_via_f32(a, out)
    rule = _BITS_ROUNDING.get(to)
    if rule is None or a.dtype != np.float64:
        wide = cast(a, to).astype(np.float64)
        if out is None:
            return wide
        out[...] = wide
        return out
    if out is None:
        out = np.empty(a.shape, np.float64)
    elif out.shape != a.shape or out.dtype != np.float64:
        raise HalError(f"round_to: out is {out.dtype}{list(out.shape)}, needs float64"
                       f"{list(a.shape)}", hint="pass a float64 array of x's shape, or none")
    src = np.ascontiguousarray(a).reshape(-1).view(np.uint64)
    direct = out.flags.c_contiguous
    dst = out.reshape(-1) if direct else np.empty(a.size, np.float64)
    bits = dst.view(np.uint64)
    tmp = np.empty(min(_ROUND_CHUNK, src.size), np.uint64)
    for start in range(0, src.size, _ROUND_CHUNK):
        stop = min(start + _ROUND_CHUNK, src.size)
        _round_chunk(src[start:stop], bits[start:stop], tmp[: stop - start], rule, to)
    if not direct:
        out[...] = dst.reshape(a.shape)
    return out


def _round_via_f32(a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """round_to(a, f32) of float64 `a`: through float32, chunk by chunk through one
    cache-sized float32 buffer when large, so no float32 copy of `a` (nor, with `out`, any
    other array of a's size) is made: a new large array costs more in page faults than
    both conversions."""
    if out is None:
        out = np.empty(a.shape, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):   # NaN stays NaN, quiet or not
        if a.size <= _ROUND_CHUNK or not (a.flags.c_contiguous and out.flags.c_contiguous):
            out[...] = a.astype(np.float32)
            return out
        src, dst = a.reshape(-1), out.reshape(-1)
        tmp = np.empty(_ROUND_CHUNK, np.float32)
        for start in range(0, src.size, _ROUND_CHUNK):
            stop = min(start + _ROUND_CHUNK, src.size)
            part = tmp[: stop - start]
            np.copyto(part, src[start:stop], casting="same_kind")
            np.copyto(dst[start:stop], part)
    return out


def _round_chunk(src: np.ndarray, dst: np.ndarray, tmp: np.ndarray, rule: _BitsRounding,
                 to: DType) -> None:
    """One chunk of `round_to` (`dst` may be `src`): add half an ulp minus one, plus the
    kept last bit (ties go to even), and clear the dropped bits; a carry out of the
    fraction moves to the next binade by itself (and a zero stays that zero). Values
    outside [smallest normal, the first value that rounds past the largest finite one) -
    subnormals, overflows, infs and NaNs - are redone by `cast`: one unsigned compare of
    the magnitude less the smallest normal finds them all (the smaller magnitudes wrap to
    the top), zeros too, which are then left out (masked attention probabilities)."""
    np.bitwise_and(src, _MAGNITUDE, out=tmp)
    tmp -= np.uint64(rule.low_bits)
    odd = tmp >= np.uint64(rule.round_over_bits - rule.low_bits)
    exceptional = kept = None
    if odd.any():
        exceptional = np.flatnonzero(odd)
        nonzero = tmp[exceptional] != np.uint64(-rule.low_bits & ((1 << 64) - 1))
        exceptional = exceptional[nonzero] if not nonzero.all() else exceptional
        kept = src[exceptional].view(np.float64) if exceptional.size else None
    np.right_shift(src, np.uint64(rule.shift), out=tmp)
    np.bitwise_and(tmp, np.uint64(1), out=tmp)
    tmp += np.uint64((1 << (rule.shift - 1)) - 1)
    np.add(src, tmp, out=dst)
    np.bitwise_and(dst, np.uint64(~((1 << rule.shift) - 1) & ((1 << 64) - 1)), out=dst)
    if kept is not None:
        dst[exceptional] = cast(kept, to).astype(np.float64).view(np.uint64)


def ulp(x: np.ndarray, d: DType) -> np.ndarray:
    """Size of one unit in the last place of |x| in dtype `d` (subnormal floor included)."""
    if not d.is_float:
        return np.ones_like(np.asarray(x, dtype=np.float64))
    ax = np.abs(np.asarray(x, dtype=np.float64))
    tiny = d.tiny
    e = np.floor(np.log2(np.maximum(ax, tiny), where=np.isfinite(ax), out=np.zeros_like(ax)))
    return np.exp2(e - d.mantissa_bits)
