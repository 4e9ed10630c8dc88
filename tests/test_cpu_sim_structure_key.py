"""The translation cache's key (simulator._structure_key, pickled kernel structure):
equal structures share one translation, and every difference the generated code can
depend on (a constant's sign, type or bits, the launch shape) is a different key."""

from __future__ import annotations

import numpy as np

from hal.backends.cpu_sim import simulator
from hal.backends.cpu_sim.simulator import _structure_key, compiled
from hal.dtypes import f32, i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    BufferParam,
    Const,
    Declare,
    Kernel,
    Store,
    Var,
)

N = 256


def _kernel(value, name: str = "k", grid: int = N // 64, dtype=f32) -> Kernel:
    """o[i] = value."""
    i = Var("i", i32)
    return Kernel(name, [BufferParam("o", f32, (N,), readonly=False)],
                  [Declare(i, BLOCK_IDX_X * Const(64, i32) + THREAD_IDX),
                   Store("o", i, Const(value, dtype))],
                  grid=(grid, 1, 1), block=64)


def test_equal_structures_share_a_key_and_a_translation_whatever_the_name():
    simulator._CACHE.clear()
    assert _structure_key(_kernel(2.0, "k0_exp")) == _structure_key(_kernel(2.0, "g0_exp"))
    assert compiled(_kernel(2.0, "k0_exp")) is compiled(_kernel(2.0, "g0_exp"))


def test_constants_equal_under_eq_but_not_in_the_code_get_their_own_keys():
    """0.0 == -0.0 and 1 == 1.0 == True, but their translations bind other values."""
    keys = {_structure_key(_kernel(v)) for v in (0.0, -0.0, 1, 1.0, True)}
    assert len(keys) == 5
    simulator._CACHE.clear()
    neg = compiled(_kernel(-0.0))
    assert compiled(_kernel(0.0)) is not neg
    bound = [v for k, v in neg.run.__globals__.items() if k.startswith("_k")]
    assert any(np.signbit(v) for v in bound)


def test_a_launch_shape_or_a_dtype_is_part_of_the_key():
    base = _structure_key(_kernel(2.0))
    assert _structure_key(_kernel(2.0, grid=2)) != base
    assert _structure_key(_kernel(2.0, dtype=i32)) != base


def test_an_unpicklable_value_falls_back_to_the_repr():
    k = _kernel(lambda: 0)   # (not a real constant: only the key is computed)
    key = _structure_key(k)
    assert isinstance(key, str) and key == _structure_key(_kernel(k.body[1].value.value))
