"""Movement ops (broadcast_to, reshape, transpose, slice, pad, concat) against torch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_eval_helper import one_node_graph, run_op

from hal.errors import ShapeError

torch = pytest.importorskip("torch", reason="torch is the comparison baseline: pip install hal[torch]")

RNG = np.random.default_rng(0)
SPECIAL = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1.5], np.float32)


def _x(shape, dt=np.float32):
    return RNG.standard_normal(shape).astype(dt)


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(a).shape == tuple(np.asarray(b).shape)
    # -0.0 survives data movement
    if np.asarray(a).dtype.kind == "f":
        assert (np.signbit(np.asarray(a)) == np.signbit(np.asarray(b, np.float64))).all()


@pytest.mark.parametrize("src,dst", [((3,), (2, 3)), ((1,), (4,)), ((2, 1), (2, 5)),
                                     ((), (2, 3)), ((1, 3), (0, 3)), ((3,), (3,)),
                                     ((0,), (2, 0)), ((1, 1), (1, 1))])
def test_broadcast_to(src, dst):
    x = _x(src)
    (y,) = run_op("broadcast_to", x, shape=dst)
    same(y, torch.broadcast_to(torch.from_numpy(x), dst).numpy())


@pytest.mark.parametrize("src,dst", [((3,), (4,)), ((2, 3), (3,)), ((2, 3), (3, 2))])
def test_broadcast_to_errors(src, dst):
    with pytest.raises(ShapeError, match="broadcast_to"):
        one_node_graph("broadcast_to", [("x", "f32", src)], shape=dst)


def test_broadcast_special_values():
    (y,) = run_op("broadcast_to", SPECIAL, shape=(2, 6))
    same(y, np.broadcast_to(SPECIAL, (2, 6)))


@pytest.mark.parametrize("src,dst", [((2, 3), (6,)), ((2, 3), (3, -1)), ((6,), (1, 6, 1)),
                                     ((0, 4), (-1, 2)), ((1,), ()), ((), (1, 1)),
                                     ((2, 0), (0, 5))])
def test_reshape(src, dst):
    x = _x(src)
    (y,) = run_op("reshape", x, shape=dst)
    same(y, torch.from_numpy(x).reshape(dst).numpy())


@pytest.mark.parametrize("src,dst,msg", [((2, 3), (4,), "element count"),
                                         ((2, 3), (-1, -1), "more than one"),
                                         ((2, 3), (4, -1), "divide"),
                                         ((0, 3), (-1, 0), "divide")])
def test_reshape_errors(src, dst, msg):
    with pytest.raises(ShapeError, match=f"reshape.*{msg}|{msg}"):
        one_node_graph("reshape", [("x", "f32", src)], shape=dst)


@pytest.mark.parametrize("shape,perm", [((2, 3, 4), (2, 0, 1)), ((2, 3), (1, 0)), ((), ()),
                                        ((0, 3), (1, 0)), ((1, 5, 1), (2, 1, 0))])
def test_transpose(shape, perm):
    x = _x(shape)
    (y,) = run_op("transpose", x, perm=perm)
    same(y, torch.from_numpy(x).permute(perm).numpy())


@pytest.mark.parametrize("perm", [(0, 0), (0,), (0, 2)])
def test_transpose_errors(perm):
    with pytest.raises(ShapeError, match="transpose"):
        one_node_graph("transpose", [("x", "f32", (2, 3))], perm=perm)


@pytest.mark.parametrize("starts,stops,steps,axes", [
    ((1,), (3,), (1,), None),
    ((0, 1), (5, 4), (2, 2), None),
    ((-3,), (-1,), (1,), (1,)),
    ((-100,), (100,), (3,), (-1,)),
    ((4,), (2,), (1,), (0,)),        # empty
    ((2,), (2,), (1,), (1,)),
    ((0, 0), (1, 1), (1, 1), (1, 0)),
])
def test_slice(starts, stops, steps, axes):
    x = _x((5, 6))
    (y,) = run_op("slice", x, starts=starts, stops=stops, steps=steps, axes=axes)
    index = [slice(None)] * 2
    for i, ax in enumerate(axes if axes is not None else range(len(starts))):
        index[ax] = slice(starts[i], stops[i], steps[i])
    same(y, torch.from_numpy(x)[tuple(index)].numpy())


def test_slice_zero_size_dim():
    x = _x((0, 4))
    (y,) = run_op("slice", x, starts=(1,), stops=(3,), steps=(1,), axes=(1,))
    assert y.shape == (0, 2)


@pytest.mark.parametrize("attrs,msg", [
    (dict(starts=(0,), stops=(2,), steps=(0,)), "not positive"),
    (dict(starts=(2,), stops=(0,), steps=(-1,)), "not positive"),
    (dict(starts=(0,), stops=(2,), steps=(1,), axes=(2,)), "out of range"),
    (dict(starts=(0, 0), stops=(2,), steps=(1,)), "lengths"),
])
def test_slice_errors(attrs, msg):
    with pytest.raises(ShapeError, match=f"slice.*{msg}"):
        one_node_graph("slice", [("x", "f32", (3, 4))], **attrs)


@pytest.mark.parametrize("shape,low,high,value", [((2, 3), (1, 0), (0, 2), 0.0),
                                                  ((3,), (2,), (2,), -np.inf),
                                                  ((0, 2), (1, 1), (0, 0), 7.0),
                                                  ((), (), (), 1.0)])
def test_pad(shape, low, high, value):
    x = _x(shape)
    (y,) = run_op("pad", x, low=low, high=high, value=value)
    width = [p for lo, hi in reversed(list(zip(low, high, strict=True))) for p in (lo, hi)]
    same(y, torch.nn.functional.pad(torch.from_numpy(x), width, value=value).numpy())


def test_pad_int_and_errors():
    (y,) = run_op("pad", np.array([1, 2], np.int32), low=(1,), high=(0,), value=3.0)
    np.testing.assert_array_equal(y, [3, 1, 2])
    assert y.dtype == np.int32
    with pytest.raises(ShapeError, match="pad: negative"):
        one_node_graph("pad", [("x", "f32", (3,))], low=(-1,), high=(0,))
    with pytest.raises(ShapeError, match="pad: low has 1"):
        one_node_graph("pad", [("x", "f32", (3, 2))], low=(1,), high=(0,))


@pytest.mark.parametrize("shapes,axis", [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 0)], -1),
                                         ([(0, 3), (0, 3)], 1), ([(1,)], 0)])
def test_concat(shapes, axis):
    xs = [_x(s) for s in shapes]
    (y,) = run_op("concat", *xs, axis=axis)
    same(y, torch.cat([torch.from_numpy(x) for x in xs], dim=axis).numpy())


@pytest.mark.parametrize("specs,axis,msg", [
    ([("a", "f32", (2, 3)), ("b", "f32", (3, 3))], 1, "differ on axis 0"),
    ([("a", "f32", (2, 3)), ("b", "f16", (2, 3))], 0, "cast"),
    ([("a", "f32", (2, 3)), ("b", "f32", (2,))], 0, "rank"),
    ([("a", "f32", (2, 3))], 2, "out of range"),
])
def test_concat_errors(specs, axis, msg):
    with pytest.raises(ShapeError, match=f"concat.*{msg}"):
        one_node_graph("concat", specs, axis=axis)


def test_movement_bf16_roundtrip_is_exact():
    x = torch.tensor([1.0078125, -0.0, float("inf"), float("nan")], dtype=torch.bfloat16)
    xn = x.view(torch.int16).numpy().view("bfloat16")
    (y,) = run_op("transpose", xn.reshape(2, 2), perm=(1, 0))
    assert y.dtype == xn.dtype
    np.testing.assert_array_equal(y.view(np.int16), xn.reshape(2, 2).T.view(np.int16))


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(0, 7), start=st.integers(-10, 10), stop=st.integers(-10, 10),
       step=st.integers(1, 4))
def test_slice_python_semantics_property(dim, start, stop, step):
    x = np.arange(dim * 2, dtype=np.float32).reshape(2, dim)
    (y,) = run_op("slice", x, starts=(start,), stops=(stop,), steps=(step,), axes=(-1,))
    same(y, torch.from_numpy(x)[:, start:stop:step].numpy())
