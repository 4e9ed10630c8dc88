"""Benchmark cases: one op (or a small fused pattern) as a hal graph plus a framework recipe.

`make_case("rms_norm", ["4096x4096"], "bf16")` builds a `BenchCase`: the hal
graph to plan and run, a seeded input maker, and a `recipe` that computes the
same thing in a framework (torch, jax) for the baselines in hal.bench.baselines.

OP_OR_FILE spellings:

* a named case from `CASES` (softmax, layer_norm, rms_norm, gelu, silu, matmul,
  attention, gather / embedding, elementwise, ...), registered with
  `register_case`;
* any registered elementwise or reduction op (`exp`, `add`, `reduce_sum`, ...):
  inputs of the given shape; reductions reduce the last axis;
* a base followed by epilogues joined with `+`: `matmul+bias+gelu`,
  `rms_norm+silu`; epilogues come from `EPILOGUES` (`register_epilogue`) and
  apply, in order, to the output of what precedes them;
* a path to a `.hal` file (no framework recipe: baselines are unavailable).

Shapes are `AxBxC` strings. Each case documents which shapes it takes
(`hal bench --list` prints them): matmul takes `MxNxK` or the two operands
`MxK KxN`; attention takes q `BxHqxSxD` and optionally k/v `BxHkvxTxD`;
gather takes the table `VxD` and the indices' shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hal.dtypes import DType, dtype
from hal.errors import HalError
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Graph, Value
from hal.ir.types import TensorType

Shape = tuple[int, ...]
# recipe(ops, *inputs in graph-input order) -> output; `ops` is a framework namespace
# (hal.bench.baselines.TorchOps / JaxOps) with the methods the recipes below call.
Recipe = Callable[..., Any]


@dataclass
class BenchCase:
    """What one benchmark runs: a hal graph, its inputs, and the same computation for baselines."""

    name: str                       # "rms_norm 4096x4096 bf16"
    op: str                         # the OP_OR_FILE spelling
    shapes: tuple[Shape, ...]
    dtype: str
    graph: Graph
    recipe: Recipe | None = None    # None: no framework equivalent (a .hal file)
    attrs: dict[str, Any] = field(default_factory=dict)
    index_ranges: dict[str, int] = field(default_factory=dict)  # int input -> exclusive bound
    # keep the inputs of the last seed (hal and every baseline of one case then share one
    # host copy instead of drawing large tensors again); the arrays must not be mutated
    cache_inputs: bool = False
    _inputs: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False,
                                                      compare=False)

    def make_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs (hal.reference.random_inputs); index inputs drawn within their range."""
        if self.cache_inputs:
            if seed not in self._inputs:
                self._inputs.clear()
                self._inputs[seed] = self._draw_inputs(seed)
            return dict(self._inputs[seed])
        return self._draw_inputs(seed)

    def release_inputs(self) -> None:
        """Drop cached inputs (cache_inputs)."""
        self._inputs.clear()

    def _draw_inputs(self, seed: int) -> dict[str, np.ndarray]:
        from hal.dtypes import cast
        from hal.reference import random_inputs

        values = random_inputs(self.graph, seed)
        rng = np.random.default_rng(seed + 1)
        for v in self.graph.inputs:
            if v.name in self.index_ranges:
                values[v.name] = cast(rng.integers(0, self.index_ranges[v.name], v.shape),
                                      v.dtype)
        return values

    @property
    def elements(self) -> int:
        """Elements of every graph input and output (what sizes the simulator's work)."""
        return sum(v.type.numel for v in [*self.graph.inputs, *self.graph.outputs])


# --------------------------------------------------------------------------- shapes


def parse_shape(text: str | Sequence[int]) -> Shape:
    """`"4096x4096"` -> (4096, 4096); a list of ints passes through."""
    if not isinstance(text, str):
        dims = tuple(text)
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                               for d in dims):
            raise HalError(f"shape {list(dims)} is not a list of positive integers",
                           hint="write shapes as 4096x4096 or [4096, 4096]")
        return dims
    parts = text.lower().replace(" ", "").split("x")
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise HalError(f"shape '{text}' is not of the form AxBxC with positive integers",
                       hint="e.g. --shape 4096x4096")
    return tuple(int(p) for p in parts)


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _need(op: str, shapes: Sequence[Shape], counts: Sequence[int], rule: str) -> None:
    if len(shapes) not in counts:
        raise HalError(f"{op}: got {len(shapes)} shape(s), expected {rule}",
                       hint=f"pass --shape once per operand: {rule}")


def _need_rank(op: str, shape: Shape, ranks: Sequence[int], what: str) -> None:
    if len(shape) not in ranks:
        raise HalError(f"{op}: shape {fmt_shape(shape)} has rank {len(shape)}, expected {what}")


# --------------------------------------------------------------------------- named cases


@dataclass(frozen=True)
class CaseSpec:
    """A named case: `build` adds inputs and ops to a builder and returns the output value."""

    name: str
    build: Callable[[GraphBuilder, list[Shape], DType, dict[str, Any]], Value]
    recipe: Recipe
    shapes: str                     # the shape rule, for --list and errors
    example: str                    # an example shape list, e.g. "4096x4096"
    attrs: dict[str, Any] = field(default_factory=dict)   # defaults, overridable
    index_ranges: Callable[[list[Shape]], dict[str, int]] | None = None
    doc: str = ""


CASES: dict[str, CaseSpec] = {}


def register_case(spec: CaseSpec) -> None:
    """Add a named case (the extension point for a new benchmark pattern)."""
    CASES[spec.name] = spec


def _one(op: str, shapes: list[Shape]) -> Shape:
    _need(op, shapes, (1,), "one shape")
    return shapes[0]


def _build_unary(op: str) -> Callable:
    def build(b: GraphBuilder, shapes, dt, attrs):
        return b.op(op, b.input("x", dt, _one(op, shapes)), **attrs)
    return build


def _build_softmax(b, shapes, dt, attrs):
    return b.op("softmax", b.input("x", dt, _one("softmax", shapes)), **attrs)


def _build_layer_norm(b, shapes, dt, attrs):
    x = b.input("x", dt, _one("layer_norm", shapes))
    d = x.shape[-1:]
    return b.op("layer_norm", x, b.input("weight", dt, d), b.input("bias", dt, d), **attrs)


def _build_rms_norm(b, shapes, dt, attrs):
    x = b.input("x", dt, _one("rms_norm", shapes))
    return b.op("rms_norm", x, b.input("weight", dt, x.shape[-1:]), **attrs)


def _matmul_shapes(shapes: list[Shape]) -> tuple[Shape, Shape]:
    _need("matmul", shapes, (1, 2), "MxNxK, or the operands MxK and KxN")
    if len(shapes) == 1:
        _need_rank("matmul", shapes[0], (3,), "3 (MxNxK)")
        m, n, k = shapes[0]
        return (m, k), (k, n)
    a, bb = shapes
    _need_rank("matmul", a, (2, 3), "2 or 3")
    _need_rank("matmul", bb, (len(a),), f"{len(a)} (like the first operand)")
    return a, bb


def _build_matmul(b, shapes, dt, attrs):
    sa, sb = _matmul_shapes(shapes)
    return b.op("matmul", b.input("a", dt, sa), b.input("b", dt, sb), **attrs)


def _attention_shapes(shapes: list[Shape]) -> tuple[Shape, Shape]:
    _need("attention", shapes, (1, 2), "q BxHqxSxD, optionally k/v BxHkvxTxD")
    q = shapes[0]
    _need_rank("attention", q, (4,), "4 (BxHqxSxD)")
    kv = shapes[1] if len(shapes) == 2 else q
    _need_rank("attention", kv, (4,), "4 (BxHkvxTxD)")
    return q, kv


def _build_attention(b, shapes, dt, attrs):
    sq, skv = _attention_shapes(shapes)
    q, k, v = b.input("q", dt, sq), b.input("k", dt, skv), b.input("v", dt, skv)
    return b.op("scaled_dot_product_attention", q, k, v, **attrs)


def _build_gather(b, shapes, dt, attrs):
    _need("gather", shapes, (2,), "the table VxD and the indices' shape (e.g. BxS)")
    table = b.input("table", dt, shapes[0])
    return b.op("gather", table, b.input("indices", "i32", shapes[1]), **attrs)


def _build_add(b, shapes, dt, attrs):
    s = _one("elementwise", shapes)
    return b.op("add", b.input("x", dt, s), b.input("y", dt, s))


def _gather_ranges(shapes: list[Shape]) -> dict[str, int]:
    return {"indices": shapes[0][0]}


for _spec in (
    CaseSpec("elementwise", _build_add, lambda o, x, y: o.add(x, y), "one shape: x, y",
             "4096x4096", doc="x + y: a streaming elementwise kernel (2 reads, 1 write)"),
    CaseSpec("softmax", _build_softmax, lambda o, x, axis=-1: o.softmax(x, axis),
             "one shape: x (softmax over the last axis)", "4096x4096", {"axis": -1}),
    CaseSpec("layer_norm", _build_layer_norm,
             lambda o, x, w, bias, axis=-1, eps=1e-5: o.layer_norm(x, w, bias, eps),
             "one shape: x [..., D]; weight, bias [D]", "4096x4096", {"eps": 1e-5}),
    CaseSpec("rms_norm", _build_rms_norm, lambda o, x, w, eps=1e-6: o.rms_norm(x, w, eps),
             "one shape: x [..., D]; weight [D]", "4096x4096", {"eps": 1e-6}),
    CaseSpec("gelu", _build_unary("gelu"),
             lambda o, x, approximate="none": o.gelu(x, approximate),
             "one shape: x", "4096x14336", {"approximate": "none"}),
    CaseSpec("silu", _build_unary("silu"), lambda o, x: o.silu(x), "one shape: x",
             "4096x14336"),
    CaseSpec("matmul", _build_matmul, lambda o, a, b: o.matmul(a, b),
             "MxNxK, or a MxK and b KxN", "4096x4096x4096"),
    CaseSpec("attention", _build_attention,
             lambda o, q, k, v, causal=True, scale=None: o.attention(q, k, v, causal, scale),
             "q BxHqxSxD, optionally k/v BxHkvxTxD (grouped-query when Hkv < Hq)",
             "1x32x2048x128 1x8x2048x128", {"causal": True},
             doc="scaled_dot_product_attention, causal unless --attr causal=false"),
    CaseSpec("gather", _build_gather, lambda o, t, i, axis=0: o.gather(t, i),
             "table VxD and indices (e.g. BxS)", "128256x4096 1x2048", {"axis": 0},
             index_ranges=_gather_ranges, doc="embedding lookup: table[indices]"),
):
    register_case(_spec)
CASES["embedding"] = CASES["gather"]
CASES["sdpa"] = CASES["attention"]


# --------------------------------------------------------------------------- epilogues


@dataclass(frozen=True)
class Epilogue:
    """`base+NAME`: applied to the output y; `operand` gives an extra input's shape (or None)."""

    name: str
    build: Callable[[GraphBuilder, Value, Value | None], Value]
    recipe: Callable[..., Any]      # recipe(ops, y[, operand]) -> y'
    operand: Callable[[Shape], Shape] | None = None
    doc: str = ""


EPILOGUES: dict[str, Epilogue] = {}


def register_epilogue(ep: Epilogue) -> None:
    EPILOGUES[ep.name] = ep


def _bcast_add(b: GraphBuilder, y: Value, z: Value) -> Value:
    if z.shape != y.shape:
        z = b.op("broadcast_to", z, shape=y.shape)
    return b.op("add", y, z)


def _relu(b: GraphBuilder, y: Value, _: Value | None) -> Value:
    zero = b.op("full", shape=y.shape, value=0.0, dtype=y.dtype)
    return b.op("maximum", y, zero)


for _ep in (
    Epilogue("bias", _bcast_add, lambda o, y, z: o.add(y, z), lambda s: s[-1:],
             "+ bias [N] broadcast over rows"),
    Epilogue("residual", _bcast_add, lambda o, y, z: o.add(y, z), lambda s: s,
             "+ a residual of the output's shape"),
    Epilogue("gelu", lambda b, y, _: b.op("gelu", y), lambda o, y: o.gelu(y, "none"),
             doc="exact gelu"),
    Epilogue("gelu_tanh", lambda b, y, _: b.op("gelu", y, approximate="tanh"),
             lambda o, y: o.gelu(y, "tanh"), doc="tanh-approximated gelu"),
    Epilogue("silu", lambda b, y, _: b.op("silu", y), lambda o, y: o.silu(y), doc="x*sigmoid(x)"),
    Epilogue("relu", _relu, lambda o, y: o.relu(y), doc="max(x, 0)"),
):
    register_epilogue(_ep)


# --------------------------------------------------------------------------- generic ops


def _generic_spec(op: str) -> CaseSpec | None:
    """A case for any registered elementwise or reduction op, or None."""
    from hal.ops import Category, get_op
    from hal.ops.registry import OPS

    if op not in OPS:
        return None
    opdef = get_op(op)
    if opdef.category is Category.ELEMENTWISE and op != "cast":
        names = [f"x{i}" for i in range(len(opdef.inputs))]

        def build(b, shapes, dt, attrs):
            s = _one(op, shapes)
            return b.op(op, *(b.input(n, dt, s) for n in names), **attrs)

        return CaseSpec(op, build, lambda o, *xs, **at: o.elementwise(op, *xs),
                        f"one shape: {', '.join(names)}", "4096x4096")
    if opdef.category is Category.REDUCTION:
        attr_names = {a.name for a in opdef.attrs}
        defaults = {"axes": (-1,)} if "axes" in attr_names else {"axis": -1}

        def build_red(b, shapes, dt, attrs):
            return b.op(op, b.input("x", dt, _one(op, shapes)), **attrs)

        return CaseSpec(op, build_red,
                        lambda o, x, axes=(-1,), axis=-1, **at: o.reduce(op, x, axis),
                        "one shape: x (reduced over the last axis)", "4096x4096", defaults)
    return None


def case_spec(base: str) -> CaseSpec:
    """The named or generic case for `base`; HalError with suggestions when unknown."""
    spec = CASES.get(base) or _generic_spec(base)
    if spec is None:
        import difflib

        from hal.ops.registry import OPS

        close = difflib.get_close_matches(base, [*CASES, *OPS], n=3)
        raise HalError(f"unknown benchmark op '{base}'",
                       hint=(f"did you mean {', '.join(close)}? " if close else "")
                       + "named cases: " + ", ".join(sorted(CASES))
                       + "; any elementwise or reduce_* op; or a .hal file")
    return spec


# --------------------------------------------------------------------------- entry point


def make_case(op: str, shapes: Sequence[str | Sequence[int]], dtype_name: str = "bf16",
              attrs: dict[str, Any] | None = None, dims: dict[str, int] | None = None,
              name: str | None = None) -> BenchCase:
    """Build the case for OP_OR_FILE `op` at `shapes` and `dtype_name`."""
    dt = dtype(dtype_name)
    if op.endswith(".hal") or Path(op).suffix == ".hal":
        return _file_case(op, dims or {}, name)
    base, *epis = [p.strip() for p in op.split("+")]
    spec = case_spec(base)
    unknown = [e for e in epis if e not in EPILOGUES]
    if unknown:
        raise HalError(f"{op}: unknown epilogue '{unknown[0]}'",
                       hint="epilogues: " + ", ".join(sorted(EPILOGUES)))
    parsed = [parse_shape(s) for s in shapes] or [parse_shape(s)
                                                 for s in spec.example.split()]
    merged = {**spec.attrs, **(attrs or {})}
    b = GraphBuilder(_graph_name(op))
    y = spec.build(b, parsed, dt, merged)
    extra = []
    for e in epis:
        ep = EPILOGUES[e]
        z = None
        if ep.operand is not None:
            taken = set(b.graph.values())
            z = b.input(next(f"{e}{i or ''}" for i in range(len(taken) + 1)
                             if f"{e}{i or ''}" not in taken), y.dtype, ep.operand(y.shape))
            extra.append(ep)
        y = ep.build(b, y, z)
    b.output(y)
    graph = b.build()
    n_base = len(graph.inputs) - len(extra)
    recipe = _compose(spec.recipe, merged, [EPILOGUES[e] for e in epis], n_base)
    ranges = spec.index_ranges(parsed) if spec.index_ranges else {}
    label = name or f"{op} {' '.join(fmt_shape(s) for s in parsed)} {dt.name}"
    return BenchCase(label, op, tuple(parsed), dt.name, graph, recipe, merged, ranges)


def _graph_name(op: str) -> str:
    return "bench_" + "".join(c if c.isalnum() else "_" for c in op)


def _compose(base: Recipe, attrs: dict[str, Any], epis: list[Epilogue], n_base: int) -> Recipe:
    """recipe(ops, *inputs): the base on its inputs, then each epilogue with its operand."""
    def recipe(o: Any, *xs: Any) -> Any:
        y = base(o, *xs[:n_base], **attrs)
        rest = list(xs[n_base:])
        for ep in epis:
            y = ep.recipe(o, y, rest.pop(0)) if ep.operand is not None else ep.recipe(o, y)
        return y
    return recipe


def _file_case(path: str, dims: dict[str, int], name: str | None) -> BenchCase:
    from hal.ir.text import load_graph

    if not Path(path).is_file():
        raise HalError(f"{path}: no such .hal file")
    graph = load_graph(path)
    if dims or any(not v.type.is_static for v in graph.inputs):
        graph = bind_graph(graph, dims, path)
    shapes = tuple(tuple(v.shape) for v in graph.inputs)
    dt = graph.inputs[0].dtype.name if graph.inputs else "f32"
    return BenchCase(name or f"{Path(path).name}", path, shapes, dt, graph, None)


def bind_graph(graph: Graph, dims: dict[str, int], where: str = "") -> Graph:
    """A copy of `graph` with symbolic input dims replaced by `dims` (nodes re-inferred)."""
    def bound(t: TensorType, what: str) -> tuple[int, ...]:
        out = []
        for d in t.shape:
            if isinstance(d, str):
                if d not in dims:
                    raise HalError(f"{where}: {what} has symbolic dim '{d}' with no size",
                                   hint=f"pass --dim {d}=SIZE")
                d = dims[d]
            out.append(d)
        return tuple(out)

    b = GraphBuilder(graph.name)
    env: dict[str, Value] = {}
    for v in graph.inputs:
        env[v.name] = b.input(v.name, v.dtype, bound(v.type, f"input %{v.name}"))
    for c in graph.constants:
        env[c.value.name] = b.constant(c.value.name, c.value.dtype,
                                       bound(c.value.type, f"constant %{c.value.name}"), c.init)
    for n in graph.nodes:
        res = b.op(n.op, *(env[v.name] for v in n.inputs), name=[o.name for o in n.outputs],
                   **n.attrs)
        for o, r in zip(n.outputs, res if isinstance(res, tuple) else (res,), strict=True):
            env[o.name] = r
    b.output(*(env[v.name] for v in graph.outputs))
    return b.build()


def case_flops_hint(case: BenchCase) -> float:
    """A quick flop estimate (2*M*N*K for contractions), for choosing the simulator path."""
    from hal.fusion.cost import node_flops
    from hal.ops.decompose import decompose_graph

    return float(sum(node_flops(n) for n in decompose_graph(case.graph).nodes))


def total_elements(case: BenchCase) -> int:
    from hal.ops.decompose import decompose_graph

    return sum(math.prod(v.shape) for v in decompose_graph(case.graph).values().values())
