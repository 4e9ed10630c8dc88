"""The float64 reference executor: what every backend's numbers are compared against.

`evaluate(graph, inputs)` decomposes composites into primitives, then runs each
primitive's `OpDef.reference` in wide arithmetic (float64 for float dtypes,
int64 for integer dtypes, bool for bool) and rounds every result to its
declared dtype with `hal.dtypes.cast`. Consumers read the rounded value,
widened again: the reference evaluates the primitive graph in float64 from
the same rounded inputs a device kernel sees (DESIGN.md, decision 8).

`evaluate_all` returns every value (for localising a mismatch to a node);
`random_inputs` makes seeded inputs in each input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from hal.dtypes import DType, cast, round_to
from hal.errors import HalError, ShapeError
from hal.ir.graph import Graph, Value
from hal.ir.types import TensorType
from hal.reference_blocked import (
    BLOCKED_STEPS,
    dot_general_panel_steps,
    panel_operand,
    sums_in_float32,
    use_blocked,
)

#: the dtypes `widen` gives: anything else is a value kept in its own (narrow) dtype
_WIDE = (np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_))


def widen(a: np.ndarray, dt: DType) -> np.ndarray:
    """The wide form the reference computes in: float64, int64 or bool."""
    a = np.asarray(a)
    if dt.is_bool:
        return a.astype(bool)
    if dt.is_int:
        return a.astype(np.int64)
    return a.astype(np.float64)


def bind_dims(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Check `inputs` against the graph's inputs; return the symbolic dims they bind."""
    declared = {v.name: v for v in graph.inputs}
    for name in inputs:
        if name not in declared:
            raise HalError(f"graph {graph.name}: '{name}' is not an input",
                           hint="inputs: " + (", ".join(declared) or "none"))
    dims: dict[str, int] = {}
    for v in graph.inputs:
        if v.name not in inputs:
            raise HalError(f"graph {graph.name}: input %{v.name} ({v.type}) is missing",
                           hint="pass every input; random_inputs(graph) makes some")
        a = inputs[v.name]
        if not isinstance(a, np.ndarray) or a.dtype != v.dtype.np_dtype:
            got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise HalError(f"graph {graph.name}: input %{v.name} is {v.type} but the array "
                           f"given has dtype {got}",
                           hint=f"convert it with hal.dtypes.cast(x, {v.dtype.name})")
        if a.ndim != v.rank:
            raise HalError(f"graph {graph.name}: input %{v.name} is {v.type} (rank {v.rank}) "
                           f"but the array given has shape {list(a.shape)}")
        for axis, (want, got) in enumerate(zip(v.shape, a.shape, strict=True)):
            if isinstance(want, str):
                if dims.setdefault(want, got) != got:
                    raise HalError(f"graph {graph.name}: input %{v.name} axis {axis} binds "
                                   f"{want}={got}, an earlier input bound {want}={dims[want]}")
            elif want != got:
                raise HalError(f"graph {graph.name}: input %{v.name} is {v.type} but the array "
                               f"given has shape {list(a.shape)} (axis {axis})")
    return dims


def _bound(t: TensorType, dims: Mapping[str, int]) -> TensorType:
    return t.with_shape(tuple(dims.get(d, d) if isinstance(d, str) else d for d in t.shape))


def _decomposed(graph: Graph, keep=None) -> Graph:
    from hal.ops import get_op

    if not any(get_op(n.op).is_composite for n in graph.nodes):
        return graph
    try:
        from hal.ops.decompose import decompose_graph
    except ModuleNotFoundError as e:
        if e.name != "hal.ops.decompose":
            raise
        return graph  # composites run their own reference
    return decompose_graph(graph, keep)


def _pausable(steps):
    """A blocked evaluator's Steps inside _steps: each of its pauses (between tiles or
    panels) is a yield of no constants, each of its steps runs with NumPy's
    floating-point warnings off; returns its result."""
    while True:
        with np.errstate(all="ignore"):
            try:
                next(steps)
            except StopIteration as done:
                return done.value
        yield []


def _run(graph: Graph, inputs: Mapping[str, np.ndarray],
         constants: Mapping[str, np.ndarray] | None,
         keep: set[str] | None = None,
         tile_elements: int | None = None) -> dict[str, np.ndarray]:
    """Every value of `graph`, in its declared dtype; with `keep`, only those values
    (each other value is dropped after its last use, so that a real-size layer's
    float64 intermediates do not all stay alive at once). A composite node left in
    the graph runs its blocked evaluator (hal.reference_blocked) with `tile_elements`."""
    steps = _steps(graph, inputs, constants, keep, tile_elements)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _steps(graph: Graph, inputs: Mapping[str, np.ndarray],
           constants: Mapping[str, np.ndarray] | None,
           keep: set[str] | None = None,
           tile_elements: int | None = None,
           provide: Callable[[str], np.ndarray | None] | None = None,
           observe: Callable[[Value, np.ndarray], None] | None = None):
    """_run as a generator: before each node it yields the names of the constants that
    node materialises first (with `keep`, at their first use), and inside a node
    evaluated blocked (a model-scale projection's panels, attention's tiles) an empty
    list between its steps, where the caller may pause it; returns _run's values.
    `provide(name)`, when given, may return such a constant already made elsewhere, in
    its declared dtype (None: materialise it here). `observe(value, array)`, when given,
    sees every node result once stored: `array` holds the value's rounded elements, in
    its declared dtype or float64 (the caller may keep it; the reference never writes
    it again)."""
    from hal.ir.initializers import materialize
    from hal.ops import get_op

    dims = bind_dims(graph, inputs)
    declared: dict[str, np.ndarray] = {}
    wide: dict[str, np.ndarray] = {}
    leaves: dict[str, tuple[np.ndarray, DType]] = {}

    def store_leaf(v: Value, a: np.ndarray) -> None:
        if keep is None:
            store(v, a)
            return
        # an input or constant stays in its own dtype and is widened at each use (a
        # layer's weights in float64 would be 4x their bf16 size, all alive at once)
        d = cast(a, v.dtype)
        leaves[v.name] = (d, v.dtype)
        if v.name in keep:
            declared[v.name] = d

    def wide_arg(name: str, narrow_ok: bool = False) -> np.ndarray:
        """The value in wide form; with `narrow_ok`, a large float leaf stays in its own
        dtype (dot_general_panels converts it a panel at a time)."""
        if name in wide:
            return wide[name]
        if name in lazy:
            c, t = lazy.pop(name)
            made = provide(name) if provide is not None else None
            if made is not None and made.dtype == c.value.dtype.np_dtype \
                    and tuple(made.shape) == tuple(t.shape):
                leaves[name] = (made, c.value.dtype)   # the caller's array, not copied
                if keep is None or name in keep:
                    declared[name] = made
            else:
                store_leaf(c.value, materialize(c.init, t, graph.base_dir, name=name))
        d, dt = leaves[name]
        return d if narrow_ok and panel_operand(d, dt) else widen(d, dt)

    def store(v: Value, a: np.ndarray, fresh: bool = False) -> None:
        if keep is not None and v.name not in keep and v.dtype.is_float \
                and a.dtype == np.float64:
            # a value only later nodes read is rounded in float64 (round_to), in place when
            # it is the op's own new array: no narrow and wide copies of a (possibly
            # attention-score-sized) tensor beside it
            in_place = fresh and a.flags.owndata and a.flags.writeable
            wide[v.name] = round_to(a, v.dtype, out=a if in_place else None)
            return
        d = cast(a, v.dtype)
        wide[v.name] = widen(d, v.dtype)
        if keep is None or v.name in keep:
            declared[v.name] = d

    for v in graph.inputs:
        store_leaf(v, inputs[v.name])
    given = dict(constants or {})
    used = {v.name for n in graph.nodes for v in n.inputs}
    # with `keep`, a constant a node reads is materialised at its first use (a model's
    # weights are then alive one layer at a time, not all at once)
    lazy: dict[str, tuple] = {}
    for c in graph.constants:
        v = c.value
        t = _bound(v.type, dims)
        if v.name in given:
            a = np.asarray(given.pop(v.name))
            if t.is_static and tuple(a.shape) != t.shape:
                raise HalError(f"graph {graph.name}: constant %{v.name} is {v.type} but the "
                               f"array given has shape {list(a.shape)}")
        elif keep is not None and v.name in used and v.name not in keep:
            lazy[v.name] = (c, t)
            continue
        else:
            a = materialize(c.init, t, graph.base_dir, name=v.name)
        store_leaf(v, a)
    if given:
        raise HalError(f"graph {graph.name}: {', '.join(given)} given as constants but the "
                       "graph has no such constant")
    last_use: dict[str, int] = {}
    if keep is not None:
        for i, n in enumerate(graph.nodes):
            for v in n.inputs:
                last_use[v.name] = i
    for i, n in enumerate(graph.nodes):
        yield [v.name for v in n.inputs if v.name in lazy]
        opdef = get_op(n.op)
        where = f"graph {graph.name}: node {i} ({n.op}" + (f" at {n.loc}" if n.loc else "") + ")"
        try:
            attrs = opdef.check_attrs(n.attrs)
            with np.errstate(all="ignore"):
                panels = keep is not None and n.op == "dot_general"
                args = [wide_arg(v.name, panels) for v in n.inputs]
            if opdef.is_composite and n.op in BLOCKED_STEPS:
                results = yield from _pausable(BLOCKED_STEPS[n.op](args, attrs, n,
                                                                   tile_elements))
            elif panels and any(a.dtype not in _WIDE for a in args):   # one kept narrow
                results = [(yield from _pausable(dot_general_panel_steps(
                    args[0], args[1], attrs, float32_sums=sums_in_float32(n))))]
            else:
                with np.errstate(all="ignore"):
                    results = opdef.reference(args, attrs)
        except ShapeError as e:
            raise HalError(f"{where}: {e.message}", hint=e.hint) from None
        if len(results) != len(n.outputs):
            raise HalError(f"{where}: the reference returned {len(results)} results for "
                           f"{len(n.outputs)} outputs")
        for out, r in zip(n.outputs, results, strict=True):
            r = np.asarray(r)
            want = _bound(out.type, dims)
            if want.is_static and tuple(r.shape) != want.shape:
                raise HalError(f"{where}: the reference gives %{out.name} shape "
                               f"{list(r.shape)}, declared {out.type}")
            for d, got in zip(want.shape, r.shape, strict=False):
                if isinstance(d, str):
                    dims.setdefault(d, got)
            store(out, r, fresh=all(r is not x and not np.may_share_memory(r, x)
                                    for x in args))
            if observe is not None:
                observe(out, wide[out.name])
        if keep is not None:
            for v in n.inputs:
                if last_use.get(v.name) == i and v.name not in keep:
                    declared.pop(v.name, None)
                    wide.pop(v.name, None)
                    leaves.pop(v.name, None)
    return declared


def evaluate_all(graph: Graph, inputs: Mapping[str, np.ndarray], *,
                 constants: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every value of the (decomposed) graph by name, each in its declared dtype."""
    return _run(_decomposed(graph), inputs, constants)


def evaluate(graph: Graph, inputs: Mapping[str, np.ndarray], *,
             constants: Mapping[str, np.ndarray] | None = None,
             tile_elements: int | None = None) -> dict[str, np.ndarray]:
    """The graph's outputs by name, each in its declared dtype (NumPy / ml_dtypes arrays).

    An attention node whose score tensor exceeds `tile_elements` (default
    hal.reference_blocked.TILE_ELEMENTS) is evaluated blocked
    (hal.reference_blocked: the decomposition's steps, one query tile at a time)."""
    prim = _decomposed(graph, keep=lambda n: use_blocked(n, tile_elements))
    values = _run(prim, inputs, constants, keep={v.name for v in prim.outputs},
                  tile_elements=tile_elements)
    # decomposition may rename internal values; outputs correspond by position
    return {orig.name: values[new.name]
            for orig, new in zip(graph.outputs, prim.outputs, strict=True)}


def evaluate_steps(graph: Graph, inputs: Mapping[str, np.ndarray], *,
                   provide: Callable[[str], np.ndarray | None] | None = None,
                   observe: Callable[[Value, np.ndarray], None] | None = None,
                   tile_elements: int | None = None):
    """`evaluate` one node at a time: a generator that yields, before each node, the
    names of the graph constants that node materialises first (and an empty list
    between the panels or tiles of a node evaluated blocked: a place to pause, not a
    node), and returns (StopIteration value) what `evaluate` returns. `provide(name)` may hand over such a constant already
    made by the caller (in its declared dtype and shape; it is read, never written), so
    that a caller evaluating the same model (cpu_sim's whole-output parity) does not
    make a model's weights twice; None lets the reference materialise it. `observe` is
    _steps's: it sees each node's result (cpu_sim's sampled mode takes a group's
    outputs from it)."""
    prim = _decomposed(graph, keep=lambda n: use_blocked(n, tile_elements))
    values = yield from _steps(prim, inputs, None, keep={v.name for v in prim.outputs},
                               tile_elements=tile_elements, provide=provide,
                               observe=observe)
    return {orig.name: values[new.name]
            for orig, new in zip(graph.outputs, prim.outputs, strict=True)}


def random_inputs(graph: Graph, seed: int = 0, *,
                  dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1) rounded to the dtype, ints in [0, 8), bools random.

    Symbolic dims take their sizes from `dims`.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    dims = dict(dims or {})
    for v in graph.inputs:
        shape = []
        for d in v.shape:
            if isinstance(d, str):
                if d not in dims:
                    raise HalError(f"graph {graph.name}: input %{v.name} has symbolic dim "
                                   f"'{d}'", hint=f"pass dims={{'{d}': 4}} to random_inputs")
                d = dims[d]
            shape.append(d)
        if v.dtype.is_bool:
            a = rng.integers(0, 2, size=shape).astype(bool)
        elif v.dtype.is_int:
            a = rng.integers(0, 8, size=shape)
        else:
            a = rng.standard_normal(size=shape)
        out[v.name] = cast(a, v.dtype)
    return out
