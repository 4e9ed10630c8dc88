"""initializers.materialize_as: a constant in its declared dtype, random floats made and
cast chunk by chunk; always the bits of cast(materialize(...), dtype)."""

import numpy as np
import pytest

from hal.dtypes import bf16, cast, dtype
from hal.errors import GraphError
from hal.ir.graph import Initializer
from hal.ir.initializers import materialize, materialize_as
from hal.ir.types import TensorType


def _init(**params):
    return Initializer("random", tuple(sorted(params.items())))


@pytest.mark.parametrize("dt", ["bf16", "f16", "f32", "f64", "f8e4m3fn", "f8e5m2"])
@pytest.mark.parametrize("params", [dict(seed=3), dict(seed=5, scale=0.02),
                                    dict(seed=1, dist="uniform", scale=0.5)])
def test_chunked_equals_whole(dt, params):
    """Shapes that are not a multiple of the chunk, chunks far smaller than the tensor."""
    t = TensorType(dtype(dt), (37, 1001))
    want = cast(materialize(_init(**params), t), t.dtype)
    for chunk in (1000, 4096, 37 * 1001 - 1):
        got = materialize_as(_init(**params), t, chunk=chunk)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_integer_bool_and_fill_constants_equal_the_whole_path():
    """Kinds or dtypes without chunks (the random kind declines integers and bools) fall
    back to cast(materialize(...))."""
    t = TensorType(dtype("i32"), (300, 300))
    init = _init(seed=2, low=-5, high=5)
    assert np.array_equal(materialize_as(init, t, chunk=1000),
                          cast(materialize(init, t), t.dtype))
    tb = TensorType(dtype("bool"), (300, 300))
    assert np.array_equal(materialize_as(_init(seed=4), tb, chunk=1000),
                          cast(materialize(_init(seed=4), tb), tb.dtype))
    fill = Initializer("fill", (("value", 0.5),))
    assert np.all(materialize_as(fill, TensorType(bf16, (4, 4))) == 0.5)


def test_a_bad_parameter_names_the_constant():
    t = TensorType(bf16, (64, 64))
    with pytest.raises(GraphError, match="constant %w: random initializer: dist must be"):
        materialize_as(_init(seed=1, dist="cauchy"), t, name="w", chunk=100)
    with pytest.raises(GraphError, match="constant %w: random initializer: scale must be"):
        materialize_as(_init(seed=1, scale=float("inf")), t, name="w", chunk=100)
