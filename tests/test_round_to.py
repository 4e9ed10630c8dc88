"""hal.dtypes.round_to: rounding float64 on its bits equals the cast and back, bit for bit."""

import numpy as np
import pytest

from hal.dtypes import DType, bf16, cast, f8e4m3fn, f16, f32, f64, round_to
from hal.errors import HalError

BITS_TARGETS = (bf16, f16)


def _cast_back(x: np.ndarray, d: DType) -> np.ndarray:
    with np.errstate(all="ignore"):
        return cast(x, d).astype(np.float64)


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    a64, b64 = np.ascontiguousarray(a).view(np.uint64), np.ascontiguousarray(b).view(np.uint64)
    bad = np.flatnonzero(a64 != b64)
    assert bad.size == 0, (f"{bad.size} elements differ, first at {bad[:3]}: "
                           f"{a.reshape(-1)[bad[:3]]} vs {b.reshape(-1)[bad[:3]]}")


def _random_bits(n: int, seed: int) -> np.ndarray:
    """Every float64 bit pattern is equally likely: all exponents, NaNs, infs, subnormals."""
    return np.random.default_rng(seed).integers(0, 2**64, n, dtype=np.uint64,
                                                endpoint=False).view(np.float64)


def _midpoints(d: DType, seed: int) -> np.ndarray:
    """Values exactly halfway between two neighbours of `d` (ties), and one float64 ulp
    either side of them, over the target's normal exponent range."""
    rng = np.random.default_rng(seed)
    m = d.mantissa_bits
    frac = rng.integers(0, 1 << m, 4000)
    exp = rng.integers(int(np.log2(d.tiny)), int(np.log2(d.max)) + 1, 4000)
    mid = (1 + (frac + 0.5) / 2**m) * np.exp2(exp.astype(np.float64))
    mid = np.concatenate([mid, -mid])
    return np.concatenate([mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf)])


def _edges(d: DType) -> np.ndarray:
    big, tiny = d.max, d.tiny
    ulp_top = np.exp2(np.floor(np.log2(big)) - d.mantissa_bits)
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, big, -big,
            big + ulp_top / 2, big + ulp_top / 2 - ulp_top / 1024, big + ulp_top,   # overflow
            tiny, -tiny, tiny / 2, tiny * 0.75, np.nextafter(tiny, 0), 5e-324, -5e-324,
            1e-300, 1e300, -1e300]
    return np.array(vals, np.float64)


_NAN_PAYLOADS = np.array([0x7FF8000000000123, 0xFFF0000000000001, 0x7FF0000000000001,
                          0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF], np.uint64).view(np.float64)


@pytest.mark.parametrize("d", BITS_TARGETS, ids=str)
@pytest.mark.parametrize("values", ["random_bits", "midpoints", "edges", "nan_payloads",
                                    "normal"])
def test_round_to_matches_cast_bit_for_bit(d, values):
    x = {"random_bits": lambda: _random_bits(100_000, 1),
         "midpoints": lambda: _midpoints(d, 2),
         "edges": lambda: _edges(d),
         "nan_payloads": lambda: _NAN_PAYLOADS,
         "normal": lambda: np.random.default_rng(3).standard_normal(3 * (1 << 15) + 7)}[values]()
    _same_bits(round_to(x, d), _cast_back(x, d))


@pytest.mark.parametrize("d", BITS_TARGETS, ids=str)
def test_ties_go_to_even_and_overflow_to_inf(d):
    one_ulp = 2.0 ** -d.mantissa_bits
    x = np.array([1 + one_ulp / 2, 1 + 3 * one_ulp / 2, d.max * (1 + one_ulp)], np.float64)
    assert list(round_to(x, d)) == [1.0, 1 + 2 * one_ulp, np.inf]


@pytest.mark.parametrize("d", (*BITS_TARGETS, f32), ids=str)
def test_in_place_and_strided_out(d):
    x = np.random.default_rng(4).standard_normal((300, 70)) * 1e3
    want = _cast_back(x, d)
    y = x.copy()
    assert round_to(y, d, out=y) is y
    _same_bits(y, want)
    out = np.empty((70, 300)).T          # not C-contiguous
    assert round_to(x, d, out=out) is out
    _same_bits(out, want)
    _same_bits(round_to(x[:, ::3], d), _cast_back(x[:, ::3], d))   # strided input


@pytest.mark.parametrize("d", (f32, f64, f8e4m3fn, bf16), ids=str)
def test_other_targets_and_inputs_follow_cast(d):
    x = np.random.default_rng(5).standard_normal(1000) * 300
    _same_bits(round_to(x, d), _cast_back(x, d))
    narrow = x.astype(np.float32)
    _same_bits(round_to(narrow, d), _cast_back(narrow, d))


def test_out_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(HalError, match="float64"):
        round_to(np.zeros(4), bf16, out=np.zeros(5))


@pytest.mark.parametrize("d", (*BITS_TARGETS, f32), ids=str)
def test_several_chunks_in_place_and_new(d):
    """Arrays of several chunks (and a ragged last one) with every kind of value: the
    chunked paths (bits, and float32 through one reused buffer) equal the cast and back,
    in place, into a new array and into a strided `out`."""
    n = 3 * (1 << 15) + 11
    x = np.concatenate([_random_bits(n // 2, 6), np.random.default_rng(7).standard_normal(n)
                        * np.float64(d.max) / 4, _edges(d), _NAN_PAYLOADS])
    want = _cast_back(x, d)
    _same_bits(round_to(x, d), want)
    y = x.copy()
    assert round_to(y, d, out=y) is y
    _same_bits(y, want)
    out = np.empty((2, x.size))[1]
    _same_bits(round_to(x, d, out=out), want)
