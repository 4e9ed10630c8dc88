"""A tiny float64 graph evaluator for op tests (independent of hal.reference).

Each node runs its op's float64 reference; outputs are rounded to their
declared dtypes with hal's cast rules, as the real executor does.
"""

from __future__ import annotations

import numpy as np

from hal.dtypes import cast
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Graph
from hal.ops import get_op


def wide(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.bool_:
        return x
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    return x.astype(np.float64)


def evaluate(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    env = {v.name: cast(inputs[v.name], v.dtype) for v in graph.inputs}
    env.update(graph.materialize_constants() if graph.constants else {})
    for node in graph.nodes:
        opdef = get_op(node.op)
        outs = opdef.reference([wide(env[v.name]) for v in node.inputs],
                               opdef.check_attrs(node.attrs))
        for v, o in zip(node.outputs, outs, strict=True):
            o = cast(np.asarray(o), v.dtype)
            assert o.shape == tuple(v.shape), (node, o.shape)
            env[v.name] = o
    return {v.name: env[v.name] for v in graph.outputs}


def run_op(op: str, *arrays, dtypes=None, **attrs) -> list[np.ndarray]:
    """Build a one-node graph for `op` on `arrays` and return its outputs (graph verified)."""
    b = GraphBuilder(op)
    ins = []
    for i, a in enumerate(arrays):
        dt = (dtypes[i] if dtypes else None) or np.asarray(a).dtype
        ins.append(b.input(f"x{i}", dt, np.shape(a)))
    out = b.op(op, *ins, **attrs)
    outs = list(out) if isinstance(out, tuple) else [out]
    b.output(*outs)
    g = b.build()
    res = evaluate(g, {f"x{i}": np.asarray(a) for i, a in enumerate(arrays)})
    return [res[o.name] for o in outs]


def one_node_graph(op: str, specs, **attrs) -> Graph:
    """A verified graph with inputs (name, dtype, shape) and one `op` node."""
    b = GraphBuilder(op)
    ins = [b.input(n, dt, shape) for n, dt, shape in specs]
    b.output(b.op(op, *ins, name="y", **attrs))
    return b.build()
