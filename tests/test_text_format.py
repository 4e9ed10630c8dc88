"""Round-trips of the .hal text format: print -> parse gives an equal graph and the same text."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal.dtypes import DTYPES, bf16, f32, i32
from hal.errors import ParseError
from hal.ir import GraphBuilder, Initializer
from hal.ir.graph import _valid_name
from hal.ir.text import load_graph, parse_graph, print_graph, save_graph
from hal.ir.types import TensorType
from hal.ops import OPS, AttrSpec, Category, OpDef, register_op

# -- a test-only op whose attributes take any value and that has several results
if "_test_attrs" not in OPS:
    register_op(OpDef(
        "_test_attrs", Category.ELEMENTWISE, ("x",),
        lambda types, attrs: [types[0]] * attrs["n"],
        lambda xs, attrs: [xs[0]] * attrs["n"],
        attrs=(AttrSpec("n", "int", 1), AttrSpec("a", "any", None), AttrSpec("b", "any", None)),
        doc="test only: identity with arbitrary attributes and n results"))

DTYPE_LIST = list(DTYPES.values())

names = st.text(
    alphabet=st.one_of(st.characters(categories=["L", "Nd", "Nl", "No"]),
                       st.sampled_from("_.")),
    min_size=1, max_size=8).filter(_valid_name)
dims = st.one_of(st.integers(0, 5), st.sampled_from(["B", "S", "n_1"]), st.text(max_size=4))
shapes = st.lists(dims, max_size=3).map(tuple)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70), floats,
                    st.text(), st.sampled_from(DTYPE_LIST), st.just(-0.0))
attr_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=8)

numbers = st.one_of(st.integers(-100, 100), floats)
initializers = st.one_of(
    st.builds(lambda v: Initializer.make("fill", value=v), numbers),
    st.builds(lambda s, d, sc: Initializer.make("random", seed=s, dist=d, scale=sc),
              st.integers(0, 2**32), st.sampled_from(["normal", "uniform"]), floats),
    st.builds(lambda a, b: Initializer.make("iota", start=a, step=b), numbers, numbers),
    st.builds(lambda p, k: Initializer.make("npz", path=p, key=k), st.text(), st.text()),
    st.builds(lambda vs: Initializer.make("inline", values=tuple(vs)), st.lists(numbers)),
)


@st.composite
def graphs(draw):
    b = GraphBuilder(draw(st.text(max_size=6)))
    used: set[str] = set()

    def fresh():
        return draw(names.filter(lambda n: n not in used))

    values = []
    for _ in range(draw(st.integers(1, 3))):
        n = fresh()
        used.add(n)
        values.append(b.input(n, draw(st.sampled_from(DTYPE_LIST)), draw(shapes)))
    for _ in range(draw(st.integers(0, 2))):
        n = fresh()
        used.add(n)
        values.append(b.constant(n, draw(st.sampled_from(DTYPE_LIST)), draw(shapes),
                                 draw(initializers)))
    for _ in range(draw(st.integers(0, 6))):
        x = draw(st.sampled_from(values))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            out = b.op("cast", x, name=fresh(), dtype=draw(st.sampled_from(DTYPE_LIST)))
        elif choice == 1:
            k = draw(st.integers(1, 3))
            out = b.op("_test_attrs", x, name=[fresh() for _ in range(k)], n=k,
                       a=draw(attr_values), b=draw(attr_values))
        else:
            arity = 1 if choice == 2 else 2
            ops = [o.name for o in OPS.values()
                   if o.category is Category.ELEMENTWISE and len(o.inputs) == arity
                   and not o.attrs and x.dtype.name in o.dtypes]
            if not ops:
                continue
            out = b.op(draw(st.sampled_from(ops)), *([x] * arity), name=fresh())
        outs = out if isinstance(out, tuple) else (out,)
        used.update(v.name for v in outs)
        values.extend(outs)
    b.output(*draw(st.lists(st.sampled_from(values), min_size=1, max_size=3)))
    return b.build()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_round_trip_any_graph(g):
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g
    assert print_graph(back) == text


@settings(max_examples=300, deadline=None)
@given(attr_values)
def test_attr_values_round_trip_exactly(v):
    b = GraphBuilder("attrs")
    x = b.input("x", f32, (2,))
    b.output(b.op("_test_attrs", x, a=v, b=(v, [v])))
    g = b.build()
    back = parse_graph(print_graph(g))
    assert back == g
    got = back.nodes[0].attrs["a"]
    if isinstance(v, float) and not math.isnan(v):
        assert type(got) is float and got.hex() == v.hex()


GOLDEN = """\
graph mlp {
  input %x: f32[B, 8]
  input %s: f32[]
  const %w: bf16[2, 2] = random(dist="normal", scale=0.02, seed=1)
  const %b: f32[3] = inline(values=[1.0, -2, 3.5])
  const %z: i32[] = fill(value=0)
  %h: f32[B, 8] = exp(%x)
  %m: f32[B, 8], %n: f32[B, 8] = _test_attrs(%h, n=2, a=[1, 2.5, -0.0, inf, -inf, nan], b="q\\"\\n\\u2028")
  %c: bf16[B, 8] = cast(%m, dtype=bf16)
  output %c, %n, %z
}
"""


def test_golden_prints_identically():
    g = parse_graph(GOLDEN, "golden.hal")
    assert print_graph(g) == GOLDEN
    assert [v.name for v in g.inputs] == ["x", "s"]
    assert g.inputs[0].type == TensorType(f32, ("B", 8))
    assert g.inputs[1].type.shape == ()
    assert g.constants[0].init == Initializer.make("random", seed=1, dist="normal", scale=0.02)
    assert g.constants[1].init.get("values") == (1.0, -2, 3.5)
    a = g.nodes[1].attrs["a"]
    assert a[:3] == (1, 2.5, 0.0) and math.copysign(1, a[2]) == -1
    assert a[3] == math.inf and a[4] == -math.inf and math.isnan(a[5])
    assert g.nodes[1].attrs["b"] == 'q"\n\u2028'
    assert g.nodes[2].attrs["dtype"] is bf16
    assert [v.name for v in g.outputs] == ["c", "n", "z"]
    assert g.nodes[1].loc == "golden.hal:8"


def test_equals_builder_graph_and_infers_missing_types():
    text = """
    # comments and free layout are fine
    graph g {
      input %x: f32[4]
      %y = neg(%x)   # type inferred
      %z = cast(%y, dtype="i32")
      output %z
    }"""
    b = GraphBuilder("g")
    x = b.input("x", f32, (4,))
    y = b.op("neg", x, name="y")
    b.output(b.op("cast", y, name="z", dtype=i32))
    assert parse_graph(text) == b.build()


def test_odd_names_and_dims_are_quoted():
    b = GraphBuilder("my graph\t")
    x = b.input("0.a_é", f32, ("batch size", "", 3))
    b.output(b.op("_test_attrs", x, name="r", a="\ud800\x00\U0001f600"))
    g = b.build()
    text = print_graph(g)
    assert 'graph "my graph\\t" {' in text
    assert '%0.a_é: f32["batch size", "", 3]' in text
    assert parse_graph(text) == g


def test_graph_equality_distinguishes_signed_zero():
    t = GOLDEN.replace("-0.0", "0.0")
    assert parse_graph(t) != parse_graph(GOLDEN)
    assert parse_graph(GOLDEN.replace("nan]", "nan ]")) == parse_graph(GOLDEN)


def test_save_and_load_sets_base_dir(tmp_path):
    np.savez(tmp_path / "w.npz", w=np.arange(6.0).reshape(2, 3))
    b = GraphBuilder("npz")
    x = b.input("x", f32, (2, 3))
    w = b.constant("w", f32, (2, 3), Initializer.make("npz", path="w.npz", key="w"))
    b.output(b.op("add", x, w))
    g = b.build()
    save_graph(g, tmp_path / "g.hal")
    back = load_graph(tmp_path / "g.hal")
    assert back == g
    assert back.base_dir == str(tmp_path)
    np.testing.assert_array_equal(back.materialize_constants()["w"],
                                  np.arange(6.0, dtype=np.float32).reshape(2, 3))


def test_load_missing_file_is_a_parse_error(tmp_path):
    with pytest.raises(ParseError, match="cannot read"):
        load_graph(tmp_path / "nope.hal")


@pytest.mark.parametrize("kind,params", [
    ("inline", dict(values=(1, 2, 3, 4))), ("fill", dict(value=2.5)),
    ("iota", dict(start=1, step=2)), ("random", dict(seed=3, dist="uniform", scale=0.5)),
])
def test_materialize_initializers(kind, params):
    t = TensorType(f32, (2, 2))
    a = Initializer.make(kind, **params).materialize(t)
    assert a.shape == (2, 2) and a.dtype in (np.float64, np.int64)
    if kind == "inline":
        np.testing.assert_array_equal(a, [[1, 2], [3, 4]])
    if kind == "iota":
        np.testing.assert_array_equal(a, [[1, 3], [5, 7]])
    if kind == "random":
        assert np.all(np.abs(a) <= 0.5)
        np.testing.assert_array_equal(a, Initializer.make(kind, **params).materialize(t))


def test_random_initializer_ints_and_bools():
    a = Initializer.make("random", seed=0, low=2, high=5).materialize(TensorType(i32, (100,)))
    assert a.dtype == np.int64 and a.min() >= 2 and a.max() < 5
    bits = Initializer.make("random", seed=0).materialize(TensorType(DTYPES["bool"], (100,)))
    assert bits.dtype == np.bool_ and 0 < bits.sum() < 100
