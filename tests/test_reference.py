"""The float64 reference executor: rounding to declared dtypes, validation, random inputs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from hal.dtypes import bf16, bool_, cast, f8e4m3fn, f8e5m2, f16, f32, i32
from hal.errors import GraphError, HalError
from hal.ir import GraphBuilder, Initializer
from hal.ir.text import parse_graph
from hal.ops import OPS, Category, OpDef, register_op
from hal.reference import evaluate, evaluate_all, random_inputs


def _graph(text: str):
    return parse_graph(text, "test.hal")


def test_elementwise_matches_numpy_in_f32():
    g = _graph("""graph g {
      input %x: f32[3]
      input %y: f32[3]
      %a = mul(%x, %y)
      %b = exp(%a)
      output %b
    }""")
    x = np.array([0.5, -1.0, 2.0], np.float32)
    y = np.array([3.0, 0.25, 1.5], np.float32)
    out = evaluate(g, {"x": x, "y": y})
    assert list(out) == ["b"] and out["b"].dtype == np.float32
    want = np.exp((x.astype(np.float64) * y).astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(out["b"], want.astype(np.float32))


@pytest.mark.parametrize("dt,value,expected", [
    (bf16, 1.0 + 2.0**-9, 1.0),          # below half an ulp of bf16 at 1.0
    (f16, 1.0 + 2.0**-12, 1.0),
    (f16, 70000.0, np.inf),              # f16 overflows to inf
    (f8e4m3fn, 1000.0, 448.0),           # fp8 saturates
    (f8e5m2, -1e6, -57344.0),
    (f8e4m3fn, 0.3, 0.3125),
])
def test_results_round_to_declared_dtype(dt, value, expected):
    g = _graph(f"""graph g {{
      input %x: f32[1]
      %c = cast(%x, dtype={dt.name})
      %d = add(%c, %c)
      %e = cast(%d, dtype=f64)
      output %c, %e
    }}""")
    out = evaluate(g, {"x": np.array([value], np.float32)})
    assert out["c"].dtype == dt.np_dtype
    assert float(out["c"][0]) == expected
    # the consumer read the rounded value: 2 * rounded, rounded again
    assert out["e"].dtype == np.float64
    assert float(out["e"][0]) == float(cast(np.array([2 * expected]), dt)[0])


def test_intermediate_rounding_is_seen_by_consumers():
    # (x * x) in bf16 loses the low bits; subtracting the exact f32 square shows it
    g = _graph("""graph g {
      input %x: bf16[1]
      %sq = mul(%x, %x)
      %w = cast(%sq, dtype=f32)
      %x32 = cast(%x, dtype=f32)
      %exact = mul(%x32, %x32)
      %diff = sub(%exact, %w)
      output %diff
    }""")
    x = np.array([1.0 + 2.0**-7], ml_dtypes.bfloat16)
    diff = evaluate(g, {"x": x})["diff"]
    exact = (1.0 + 2.0**-7) ** 2
    rounded = float(np.array([exact]).astype(ml_dtypes.bfloat16)[0])
    assert float(diff[0]) == pytest.approx(exact - rounded) and diff[0] != 0


def test_integer_and_bool_ops():
    g = _graph("""graph g {
      input %a: i8[3]
      input %b: i8[3]
      %s = add(%a, %b)
      %q = div(%a, %b)
      %p = lt(%a, %b)
      output %s, %q, %p
    }""")
    a = np.array([100, -7, 5], np.int8)
    b = np.array([100, 2, 0], np.int8)
    out = evaluate(g, {"a": a, "b": b})
    np.testing.assert_array_equal(out["s"], np.array([-56, -5, 5], np.int8))  # wraps
    np.testing.assert_array_equal(out["q"], np.array([1, -3, 0], np.int8))    # trunc, x/0=0
    assert out["p"].dtype == np.bool_ and out["p"].tolist() == [False, True, False]


def test_constants_materialise_and_can_be_overridden():
    g = _graph("""graph g {
      input %x: f32[2, 2]
      const %w: f32[2, 2] = inline(values=[1, 2, 3, 4])
      const %z: f16[2, 2] = iota(start=0.5, step=1)
      %y = add(%x, %w)
      output %y, %z
    }""")
    x = np.zeros((2, 2), np.float32)
    out = evaluate(g, {"x": x})
    np.testing.assert_array_equal(out["y"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(out["z"], np.array([[0.5, 1.5], [2.5, 3.5]], np.float16))
    out = evaluate(g, {"x": x}, constants={"w": np.full((2, 2), 7.0)})
    np.testing.assert_array_equal(out["y"], np.full((2, 2), 7.0, np.float32))
    with pytest.raises(HalError, match="no such constant"):
        evaluate(g, {"x": x}, constants={"nope": np.zeros(1)})


def test_bad_initializer_names_the_constant():
    b = GraphBuilder("g")
    b.output(b.constant("w", f32, (2, 2), Initializer.make("inline", values=(1.0, 2.0))))
    with pytest.raises(GraphError, match=r"constant %w: inline initializer: has 2 values but"):
        evaluate(b.build(), {})
    b = GraphBuilder("g")
    b.output(b.constant("r", f32, (2,), Initializer.make("random", dist="gauss")))
    with pytest.raises(GraphError, match=r"constant %r: random initializer: dist must be"):
        evaluate(b.build(), {})


def test_symbolic_dims_bind_from_inputs():
    g = _graph("""graph g {
      input %x: f32[B, 3]
      input %y: f32[B, 3]
      %s = add(%x, %y)
      output %s
    }""")
    ins = random_inputs(g, seed=1, dims={"B": 5})
    assert ins["x"].shape == (5, 3)
    np.testing.assert_array_equal(evaluate(g, ins)["s"], ins["x"] + ins["y"])
    ins["y"] = np.zeros((4, 3), np.float32)
    with pytest.raises(HalError, match=r"input %y axis 0 binds B=4, an earlier input bound B=5"):
        evaluate(g, ins)
    with pytest.raises(HalError, match=r"symbolic dim 'B'"):
        random_inputs(g)


@pytest.mark.parametrize("inputs,match", [
    ({}, r"input %x \(f32\[2\]\) is missing"),
    ({"x": np.zeros(2, np.float64), "k": np.zeros((), np.int32)}, r"input %x is f32\[2\] but "
     r"the array given has dtype float64"),
    ({"x": np.zeros(3, np.float32), "k": np.zeros((), np.int32)}, r"input %x is f32\[2\] but "
     r"the array given has shape \[3\]"),
    ({"x": np.zeros((2, 1), np.float32), "k": np.zeros((), np.int32)}, r"rank 1"),
    ({"x": [0.0, 1.0], "k": np.zeros((), np.int32)}, r"dtype list"),
    ({"x": np.zeros(2, np.float32), "k": np.zeros((), np.int32), "q": np.zeros(1)},
     r"'q' is not an input"),
])
def test_input_validation(inputs, match):
    g = _graph("graph g {\n input %x: f32[2]\n input %k: i32[]\n output %x, %k\n}")
    with pytest.raises(HalError, match=match):
        evaluate(g, inputs)


def test_evaluate_all_returns_every_value():
    g = _graph("""graph g {
      input %x: f32[2]
      const %c: f32[2] = fill(value=2)
      %a = mul(%x, %c)
      %b = neg(%a)
      output %b
    }""")
    vals = evaluate_all(g, {"x": np.array([1.0, 3.0], np.float32)})
    assert set(vals) == {"x", "c", "a", "b"}
    np.testing.assert_array_equal(vals["a"], [2.0, 6.0])
    np.testing.assert_array_equal(vals["b"], [-2.0, -6.0])
    assert all(v.dtype == np.float32 for v in vals.values())


def test_random_inputs_are_deterministic_and_typed():
    g = _graph("""graph g {
      input %a: bf16[64]
      input %b: i32[64]
      input %c: bool[64]
      input %d: f8e4m3fn[4, 4]
      input %s: f32[]
      output %a, %b, %c, %d, %s
    }""")
    r1, r2, r3 = random_inputs(g, seed=3), random_inputs(g, seed=3), random_inputs(g, seed=4)
    for name, dt in [("a", bf16), ("b", i32), ("c", bool_), ("d", f8e4m3fn), ("s", f32)]:
        assert r1[name].dtype == dt.np_dtype
        np.testing.assert_array_equal(r1[name], r2[name])
    assert r1["s"].shape == ()
    assert not np.array_equal(r1["a"], r3["a"])
    assert r1["b"].min() >= 0 and r1["b"].max() < 8
    assert 0 < r1["c"].sum() < 64
    out = evaluate(g, r1)
    for k in r1:
        np.testing.assert_array_equal(out[k], r1[k])


def test_reduction_accumulates_in_float64_then_rounds():
    g = _graph("""graph g {
      input %x: f16[4096]
      %s: f16[] = reduce_sum(%x, axes=[0])
      output %s
    }""")
    x = np.full(4096, 0.1, np.float16)
    s = evaluate(g, {"x": x})["s"]
    assert s.dtype == np.float16
    assert float(s) == float(np.float16(x.astype(np.float64).sum()))


if "_test_double" not in OPS:
    register_op(OpDef(
        "_test_double", Category.COMPOSITE, ("x",), lambda types, attrs: [types[0]],
        lambda xs, attrs: [xs[0] * 2], decompose=lambda b, xs, attrs: [b.op("add", xs[0], xs[0])],
        doc="test only: a composite equal to add(x, x)"))


def test_composites_are_evaluated():
    g = _graph("""graph g {
      input %x: f32[3]
      %y = _test_double(%x)
      %z = neg(%y)
      output %z
    }""")
    out = evaluate(g, {"x": np.array([1.0, -2.0, 0.5], np.float32)})
    assert list(out) == ["z"]
    np.testing.assert_array_equal(out["z"], np.array([-2.0, 4.0, -1.0], np.float32))
