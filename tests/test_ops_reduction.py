"""Reductions, argmax/argmin and cumsum against torch."""

import numpy as np
import pytest
from ops_eval_helper import one_node_graph, run_op

from hal.errors import ShapeError

torch = pytest.importorskip("torch", reason="torch is the comparison baseline: pip install hal[torch]")

RNG = np.random.default_rng(1)
TORCH_REDUCE = {"reduce_sum": torch.sum, "reduce_prod": torch.prod,
                "reduce_max": torch.amax, "reduce_min": torch.amin,
                "reduce_any": torch.any, "reduce_all": torch.all}


def _torch_reduce(op, x, axes, keepdims):
    t = torch.from_numpy(x)
    dims = tuple(range(x.ndim)) if axes is None else tuple(a % max(x.ndim, 1) for a in axes)
    if op == "reduce_prod":  # torch.prod takes one dim at a time
        for d in sorted(dims, reverse=True):
            t = torch.prod(t, dim=d, keepdim=keepdims)
        return t.numpy()
    if op in ("reduce_any", "reduce_all"):
        for d in sorted(dims, reverse=True):
            t = TORCH_REDUCE[op](t, dim=d, keepdim=keepdims)
        return t.numpy()
    if not dims:
        return t.numpy()
    return TORCH_REDUCE[op](t, dim=dims, keepdim=keepdims).numpy()


CASES = [((3, 4), None, False), ((3, 4), (1,), True), ((2, 3, 4), (-1, 0), False),
         ((2, 3), (), False), ((1, 5), (0,), False), ((0, 3), (1,), False), ((4,), (0,), True)]


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_prod", "reduce_max", "reduce_min"])
@pytest.mark.parametrize("shape,axes,keepdims", CASES)
def test_numeric_reductions(op, shape, axes, keepdims):
    x = RNG.standard_normal(shape).astype(np.float32)
    (y,) = run_op(op, x, axes=axes, keepdims=keepdims)
    ref = _torch_reduce(op, x, axes, keepdims)
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["reduce_any", "reduce_all"])
@pytest.mark.parametrize("shape,axes,keepdims", CASES + [((0,), None, False)])
def test_bool_reductions(op, shape, axes, keepdims):
    x = RNG.standard_normal(shape) > 0.3
    (y,) = run_op(op, x, axes=axes, keepdims=keepdims)
    np.testing.assert_array_equal(y, _torch_reduce(op, x, axes, keepdims))


def test_empty_identities():
    x = np.zeros((0, 3), np.float32)
    assert run_op("reduce_sum", x, axes=(0,))[0].tolist() == [0, 0, 0]
    assert run_op("reduce_prod", x, axes=(0,))[0].tolist() == [1, 1, 1]
    assert not run_op("reduce_any", np.zeros((0,), bool))[0]
    assert run_op("reduce_all", np.zeros((0,), bool))[0]
    for op in ("reduce_max", "reduce_min"):
        with pytest.raises(ShapeError, match=f"{op}: reduces over an empty axis"):
            one_node_graph(op, [("x", "f32", (0, 3))], axes=(0,))
        # reducing a non-empty axis of an empty tensor is fine
        assert run_op(op, x, axes=(1,))[0].shape == (0,)


def test_special_values():
    x = np.array([[1.0, np.nan, 3.0], [np.inf, -np.inf, 0.0], [-0.0, -0.0, -0.0]], np.float32)
    for op in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod"):
        (y,) = run_op(op, x, axes=(1,))
        np.testing.assert_array_equal(y, _torch_reduce(op, x, (1,), False))
    # The accumulator starts at +0 (as in kernels and torch): a sum of -0.0s is +0.0.
    (y,) = run_op("reduce_sum", x[2:], axes=(1,))
    assert not np.signbit(y[0]) and not torch.from_numpy(x[2:]).sum(1).signbit()[0]


def test_sum_f16_overflows_to_inf_like_torch():
    x = np.full((4,), 30000, np.float16)
    (y,) = run_op("reduce_sum", x)
    assert y.dtype == np.float16 and np.isinf(y)
    assert np.isinf(torch.from_numpy(x).sum().numpy())


def test_int_reductions():
    x = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    for op in ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min"):
        (y,) = run_op(op, x, axes=(1,))
        assert y.dtype == np.int32
        np.testing.assert_array_equal(y, _torch_reduce(op, x, (1,), False))


@pytest.mark.parametrize("op,dt,attrs,msg", [
    ("reduce_sum", "f32", dict(axes=(2,)), "out of range"),
    ("reduce_sum", "f32", dict(axes=(0, -2)), "repeated"),
    ("reduce_any", "f32", dict(), "not supported"),
    ("reduce_sum", "bool", dict(), "not supported"),
])
def test_reduction_errors(op, dt, attrs, msg):
    with pytest.raises(ShapeError, match=f"{op}.*{msg}"):
        one_node_graph(op, [("x", dt, (2, 3))], **attrs)


@pytest.mark.parametrize("op,tfn", [("argmax", torch.argmax), ("argmin", torch.argmin)])
@pytest.mark.parametrize("axis,keepdims", [(0, False), (-1, True), (1, False)])
def test_arg_reductions(op, tfn, axis, keepdims):
    x = RNG.integers(0, 3, (4, 5)).astype(np.float32)  # many ties: first occurrence wins
    x[1, 2] = np.nan
    x[3, :] = [np.inf, -np.inf, np.inf, -np.inf, 0]
    (y,) = run_op(op, x, axis=axis, keepdims=keepdims)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, tfn(torch.from_numpy(x), dim=axis, keepdim=keepdims).numpy())


def test_arg_reduction_dtype_and_errors():
    (y,) = run_op("argmax", np.array([1, 3, 3], np.int8), axis=0, dtype="i64")
    assert y.dtype == np.int64 and y == 1
    with pytest.raises(ShapeError, match="argmax: axis 0 of shape \\[0\\] is empty"):
        one_node_graph("argmax", [("x", "f32", (0,))], axis=0)
    with pytest.raises(ShapeError, match="argmin: index dtype f32"):
        one_node_graph("argmin", [("x", "f32", (3,))], axis=0, dtype="f32")


@pytest.mark.parametrize("shape,axis", [((3, 4), 1), ((3, 4), -2), ((0, 3), 0), ((1,), 0),
                                        ((2, 0), 1)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("exclusive", [False, True])
def test_cumsum(shape, axis, reverse, exclusive):
    x = RNG.standard_normal(shape)
    (y,) = run_op("cumsum", x, axis=axis, reverse=reverse, exclusive=exclusive)
    t = torch.from_numpy(x)
    if reverse:
        t = t.flip(axis)
    ref = torch.cumsum(t, dim=axis)
    if exclusive:
        ref = ref - t
    if reverse:
        ref = ref.flip(axis)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-12, atol=1e-12)


def test_cumsum_special_and_errors():
    x = np.array([1.0, np.inf, -np.inf, 2.0], np.float32)
    (y,) = run_op("cumsum", x, axis=0)
    np.testing.assert_array_equal(y, torch.cumsum(torch.from_numpy(x), 0).numpy())
    with pytest.raises(ShapeError, match="cumsum: axis 1"):
        one_node_graph("cumsum", [("x", "f32", (3,))], axis=1)
    with pytest.raises(ShapeError, match="cumsum: operand dtype bool"):
        one_node_graph("cumsum", [("x", "bool", (3,))], axis=0)
