"""The harness's copy-saving paths give the plain formulas' bits: a bound's ends rounded in
place (tolerance._stored_in_place, on the sizes where round_to rounds on the bits), the
identity cast skipped for values already in their dtype (tolerance._stored on graph
inputs, cpu_sim's input buffers), and each result still a fresh array of its own."""

from __future__ import annotations

import numpy as np
import pytest
from bits_helper import same_bits

from hal.backends.cpu_sim.backend import _input_buffer
from hal.conformance import tolerance
from hal.conformance.tolerance import round_bound
from hal.dtypes import DTYPES, bf16, cast, f16, f32, f64
from hal.reference import widen

AWKWARD = np.array([0.0, -0.0, 1.0, -1.5, np.nan, np.inf, -np.inf, 5e-324, -3e38, 6.5e4,
                    1e-40, 3.0e38, 2.0 ** -130, 65519.0, -65520.0, 7.0, 1.0 + 2.0 ** -8,
                    1.0 + 2.0 ** -11, 1.0 + 2.0 ** -24, -(1.0 + 3 * 2.0 ** -9)])
N = 1 << 15   # over every _ROUND_ON_BITS_MIN: the in-place path rounds on the bits


def _values(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.where(rng.random(n) < 0.5, np.resize(AWKWARD, n), rng.normal(size=n) * 300.0)


@pytest.mark.parametrize("dt", [f32, bf16, f16, f64], ids=lambda d: d.name)
@pytest.mark.parametrize("n", [7, N], ids=["small", "large"])
def test_in_place_rounding_is_the_cast_and_back(dt, n):
    x = _values(n)
    want = widen(cast(x, dt), dt)
    work = x.copy()
    got = tolerance._stored_in_place(work, dt)
    assert same_bits(got, want)
    if dt in tolerance._ROUND_ON_BITS_MIN and n >= tolerance._ROUND_ON_BITS_MIN[dt]:
        assert got is work   # the in-place path ran (no new array)


def test_in_place_rounding_leaves_a_read_only_array_alone():
    x = _values(N)
    x.flags.writeable = False
    got = tolerance._stored_in_place(x, bf16)
    assert got is not x and same_bits(got, widen(cast(x, bf16), bf16))


@pytest.mark.parametrize("dt", [f32, bf16, f16], ids=lambda d: d.name)
def test_round_bound_ends_on_the_bits_path_match_the_cast(dt):
    ex = _values(N)
    delta = np.abs(_values(N)) * 1e-3
    delta[::5] = 0.0
    b = round_bound(ex, delta, dt, True)
    with np.errstate(all="ignore"):
        lo = widen(cast(ex - delta, dt), dt)
        hi = widen(cast(ex + delta, dt), dt)
    ref = widen(cast(ex, dt), dt)
    lo[delta == 0], hi[delta == 0] = ref[delta == 0], ref[delta == 0]
    assert same_bits(b.lo, lo) and same_bits(b.hi, hi) and same_bits(b.ref, ref)
    assert not np.shares_memory(b.lo, b.hi)


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_stored_of_a_value_in_its_own_dtype_is_the_cast_and_back(name):
    dt = DTYPES[name]
    a = cast(_values(64), dt)
    got = tolerance._stored(a, dt)
    assert same_bits(got, widen(cast(a, dt), dt))
    assert not np.shares_memory(got, a)   # a bound's arrays never alias the inputs


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_cpu_sim_input_buffer_is_a_fresh_flat_cast(name):
    dt = DTYPES[name]
    for a in (cast(_values(60).reshape(6, 10), dt), cast(_values(60).reshape(6, 10), dt).T,
              _values(60).reshape(6, 10)):
        buf = _input_buffer(a, dt)
        want = np.ascontiguousarray(cast(a, dt)).reshape(-1)
        assert buf.dtype == want.dtype and buf.shape == want.shape
        assert buf.tobytes() == want.tobytes()   # the same bits, NaNs too
        assert buf.flags.c_contiguous and not np.shares_memory(buf, a)
