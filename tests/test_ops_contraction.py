"""dot_general and matmul against jax.lax.dot_general and torch.matmul; gather and sources."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from ops_eval_helper import one_node_graph, run_op

from hal.dtypes import bf16, f16, f32, i32
from hal.errors import HalError, ShapeError
from hal.ops.contraction import accumulation_dtype

torch = pytest.importorskip("torch", reason="torch is the comparison baseline: pip install hal[torch]")

RNG = np.random.default_rng(2)


@pytest.fixture(autouse=True, scope="module")
def _jax_x64():
    """float64 references from jax in this module only (x64 is process-global in jax)."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _x(shape):
    return RNG.standard_normal(shape)


DOT_CASES = [
    ((3, 4), (4, 5), (1,), (0,), (), ()),
    ((2, 3, 4), (2, 4, 5), (2,), (1,), (0,), (0,)),
    ((4, 3, 2), (5, 4, 2), (0,), (1,), (2,), (2,)),           # batch last, contracting first
    ((2, 3, 4, 6), (6, 4, 7), (3, 2), (0, 1), (), ()),       # two contracting dims
    ((3,), (3,), (0,), (0,), (), ()),                         # vector dot -> scalar
    ((3, 0), (0, 5), (1,), (0,), (), ()),                     # k = 0: zeros
    ((0, 4), (4, 2), (-1,), (0,), (), ()),                    # m = 0, negative dim
    ((2, 3), (5,), (), (), (), ()),                           # outer product
]


@pytest.mark.parametrize("sa,sb,lc,rc,lb,rb", DOT_CASES)
def test_dot_general_matches_jax(sa, sb, lc, rc, lb, rb):
    a, b = _x(sa), _x(sb)
    (y,) = run_op("dot_general", a, b, lhs_contracting=lc, rhs_contracting=rc,
                  lhs_batch=lb, rhs_batch=rb)
    norm = [tuple(d % len(s) for d in dims) for dims, s in ((lc, sa), (rc, sb))]
    ref = jax.lax.dot_general(jnp.asarray(a), jnp.asarray(b), ((norm[0], norm[1]), (lb, rb)),
                              precision=jax.lax.Precision.HIGHEST)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_dot_general_dtypes():
    g = one_node_graph("dot_general", [("a", "bf16", (2, 3)), ("b", "bf16", (3, 4))],
                       lhs_contracting=(1,), rhs_contracting=(0,), out_dtype="f32")
    assert g.outputs[0].dtype == f32
    assert accumulation_dtype(bf16, {"acc_dtype": None}) == f32
    assert accumulation_dtype(f16, {}) == f32
    assert accumulation_dtype(f32, {"acc_dtype": None}) == f32
    assert accumulation_dtype(i32, {"acc_dtype": None}) == i32
    a = RNG.integers(-3, 3, (2, 3)).astype(np.int8)
    b = RNG.integers(-3, 3, (3, 2)).astype(np.int8)
    (y,) = run_op("dot_general", a, b, lhs_contracting=(1,), rhs_contracting=(0,),
                  out_dtype="i32")
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, a.astype(np.int32) @ b.astype(np.int32))


@pytest.mark.parametrize("sa,sb,attrs,msg", [
    ((2, 3), (4, 5), dict(lhs_contracting=(1,), rhs_contracting=(0,)), "size 3 but rhs"),
    ((2, 3), (3, 5), dict(lhs_contracting=(2,), rhs_contracting=(0,)), "out of range"),
    ((2, 3), (3, 5), dict(lhs_contracting=(1,), rhs_contracting=(0, 1)), "pair up"),
    ((2, 3), (2, 3), dict(lhs_contracting=(1,), rhs_contracting=(1,), lhs_batch=(1,),
                          rhs_batch=(0,)), "both a batch and a contracting"),
])
def test_dot_general_errors(sa, sb, attrs, msg):
    with pytest.raises(ShapeError, match=f"dot_general.*{msg}"):
        one_node_graph("dot_general", [("a", "f32", sa), ("b", "f32", sb)], **attrs)


def test_dot_general_dtype_mismatch():
    with pytest.raises(ShapeError, match="insert a cast"):
        one_node_graph("dot_general", [("a", "f32", (2, 3)), ("b", "f16", (3, 4))],
                       lhs_contracting=(1,), rhs_contracting=(0,))


@pytest.mark.parametrize("sa,sb,ta,tb", [((3, 4), (4, 5), False, False),
                                         ((2, 4, 3), (2, 4, 5), True, False),
                                         ((2, 1, 3, 4), (2, 1, 5, 4), False, True),
                                         ((4, 3), (5, 4), True, True),
                                         ((1, 1), (1, 1), False, False),
                                         ((0, 3), (3, 2), False, False),
                                         ((2, 0), (0, 2), False, False)])
def test_matmul_matches_torch(sa, sb, ta, tb):
    a, b = _x(sa), _x(sb)
    (y,) = run_op("matmul", a, b, transpose_a=ta, transpose_b=tb)
    ta_, tb_ = torch.from_numpy(a), torch.from_numpy(b)
    ref = (ta_.transpose(-1, -2) if ta else ta_) @ (tb_.transpose(-1, -2) if tb else tb_)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-12, atol=1e-12)


def test_matmul_special_values_and_bf16():
    a = np.array([[np.inf, 1.0], [np.nan, 0.0]], np.float32)
    b = np.array([[1.0, 0.0], [2.0, -0.0]], np.float32)
    (y,) = run_op("matmul", a, b)
    np.testing.assert_array_equal(y, (torch.from_numpy(a) @ torch.from_numpy(b)).numpy())
    a16, b16 = _x((8, 16)).astype(ml_dtypes.bfloat16), _x((16, 4)).astype(ml_dtypes.bfloat16)
    (y,) = run_op("matmul", a16, b16)
    assert y.dtype == ml_dtypes.bfloat16
    ref = (torch.from_numpy(a16.astype(np.float32)).bfloat16()
           @ torch.from_numpy(b16.astype(np.float32)).bfloat16()).float().numpy()
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=1.6e-2, atol=1e-5)


@pytest.mark.parametrize("sa,sb,attrs,msg", [
    ((3,), (3, 4), {}, "rank >= 2"),
    ((2, 3, 4), (3, 4, 5), {}, "batch dims differ"),
    ((3, 4, 5), (5, 2), {}, "batch dims differ"),
    ((3, 4), (5, 2), {}, "contracting sizes differ"),
    ((3, 4), (4, 2), dict(transpose_b=True), "contracting sizes differ"),
])
def test_matmul_errors(sa, sb, attrs, msg):
    with pytest.raises(ShapeError, match=f"matmul.*{msg}"):
        one_node_graph("matmul", [("a", "f32", sa), ("b", "f32", sb)], **attrs)


# -- gather ----------------------------------------------------------------------

@pytest.mark.parametrize("table_shape,idx_shape,axis", [((10, 4), (3,), 0), ((10, 4), (2, 3), 0),
                                                        ((3, 5, 2), (4,), 1), ((5,), (), 0),
                                                        ((5, 3), (0,), 0), ((4, 6), (2, 2), -1)])
def test_gather_matches_torch(table_shape, idx_shape, axis):
    table = _x(table_shape).astype(np.float32)
    idx = RNG.integers(0, table_shape[axis], idx_shape).astype(np.int32)
    (y,) = run_op("gather", table, idx, axis=axis)
    t = torch.from_numpy(table)
    ref = torch.index_select(t, axis, torch.from_numpy(idx.reshape(-1)).long())
    ax = axis % len(table_shape)
    ref = ref.reshape(table_shape[:ax] + idx_shape + table_shape[ax + 1:])
    np.testing.assert_array_equal(y, ref.numpy())


def test_embedding_lookup_and_out_of_range():
    table = _x((7, 3)).astype(np.float32)
    idx = np.array([[0, 6], [3, 3]], np.int64)
    (y,) = run_op("gather", table, idx)
    ref = torch.nn.functional.embedding(torch.from_numpy(idx), torch.from_numpy(table))
    np.testing.assert_array_equal(y, ref.numpy())
    for bad in (7, -1):
        with pytest.raises(HalError, match=f"gather: index {bad} at position"):
            run_op("gather", table, np.array([1, bad], np.int32))
    with pytest.raises(ShapeError, match="gather: operand dtype f32 is not an integer"):
        one_node_graph("gather", [("t", "f32", (4, 2)), ("i", "f32", (3,))])


def test_take_along_axis():
    x = _x((3, 5))
    idx = RNG.integers(0, 5, (3, 2))
    (y,) = run_op("take_along_axis", x, idx, axis=1)
    np.testing.assert_array_equal(y, torch.gather(torch.from_numpy(x), 1,
                                                  torch.from_numpy(idx)).numpy())
    with pytest.raises(ShapeError, match="take_along_axis: indices shape"):
        one_node_graph("take_along_axis", [("x", "f32", (3, 5)), ("i", "i32", (2, 2))], axis=1)
    with pytest.raises(HalError, match="take_along_axis: index 5"):
        run_op("take_along_axis", x, np.full((3, 1), 5), axis=1)


# -- sources -----------------------------------------------------------------------

@pytest.mark.parametrize("shape,dim,dt", [((4,), 0, "i32"), ((2, 3), 1, "f32"),
                                          ((2, 3, 4), -3, "i64"), ((0, 3), 1, "bf16")])
def test_iota(shape, dim, dt):
    g = one_node_graph("iota", [], shape=shape, dimension=dim, dtype=dt)
    from ops_eval_helper import evaluate
    y = evaluate(g, {})["y"]
    ref = jax.lax.broadcasted_iota(jnp.int64, shape, dim % len(shape))
    np.testing.assert_array_equal(y.astype(np.int64), np.asarray(ref))
    assert y.dtype == g.outputs[0].dtype.np_dtype


def test_full_and_source_errors():
    from ops_eval_helper import evaluate
    for value, dt, expect in [(2.5, "f32", 2.5), (-np.inf, "f16", -np.inf), (1e6, "f8e4m3fn", 448),
                              (3.9, "i32", 3), (-0.0, "f32", -0.0), (np.nan, "bf16", np.nan)]:
        g = one_node_graph("full", [], shape=(2, 2), value=value, dtype=dt)
        y = evaluate(g, {})["y"].astype(np.float64)
        np.testing.assert_array_equal(y, np.full((2, 2), expect))
        assert np.signbit(y).all() == np.signbit(expect)
    g = one_node_graph("full", [], shape=(), value=1.0, dtype="f32")
    assert evaluate(g, {})["y"].shape == ()
    with pytest.raises(ShapeError, match="iota: axis 2"):
        one_node_graph("iota", [], shape=(2, 2), dimension=2, dtype="i32")
    with pytest.raises(ShapeError, match="full: shape"):
        one_node_graph("full", [], shape=(-1,), value=0.0, dtype="i32")
