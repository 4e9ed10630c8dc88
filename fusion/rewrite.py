"""Graph rewrites that prepare a graph for fusion.

`merge_common_subexpressions`: nodes applying the same op with the same attributes
to the same inputs become one (hal's ops are pure). Frameworks repeat work that a
human would write once: torch.export gives each nn.Linear its own `view` of the
normalised activations, so without this the Q, K and V projections would read three
different values and could never share their A operand (one sibling kernel).

`canonicalize_reductions`: the forms JAX's lowering leaves become the ones the fusion
rules and the attention matcher read: `maximum(v, -inf)` / `minimum(v, +inf)` (the
initial value of jax.nn.softmax's max) is `v`, and a reduction without keepdims whose
result is reshaped back to the keepdims shape (jnp.mean(..., keepdims=True),
softmax's broadcast of the row max) becomes the keepdims reduction itself; any other
reader gets a reshape (a view) of it. Both are exact.

`duplicate_cheap_producers`: a broadcast_to of a small tensor, a `full` or an
`iota` read by several consumers is copied once per consumer, so that each
copy fuses into its consumer instead of forcing one materialised tensor.
"""

from __future__ import annotations

import math

from hal.ir.graph import Graph, Node, Value, _attr_key
from hal.ir.types import TensorType
from hal.ops import Category, get_op
from hal.ops.reduction import reduced_shape, reduction_axes

# A broadcast whose source is at most this many elements is recomputed per consumer.
SMALL_SOURCE_ELEMENTS = 1 << 16


def _cheap(n: Node) -> bool:
    cat = get_op(n.op).category
    if cat is Category.SOURCE:
        return True
    if cat is Category.BROADCAST:
        src = n.inputs[0]
        return src.type.is_static and src.type.numel <= SMALL_SOURCE_ELEMENTS
    return False


def _constant_value(v: Value, producer: dict[str, Node]) -> float | None:
    """The value of `v` when it is a constant fill (full, through broadcasts/reshapes)."""
    n = producer.get(v.name)
    while n is not None and n.op in ("broadcast_to", "reshape"):
        n = producer.get(n.inputs[0].name)
    return float(n.attrs["value"]) if n is not None and n.op == "full" else None


_IDENTITY = {"maximum": float("-inf"), "minimum": float("inf")}


def canonicalize_reductions(graph: Graph) -> Graph:
    """See the module docstring. Output names are kept."""
    for _ in range(4):  # an identity removed can expose a reduction's reshape: repeat
        new = _canonicalize_once(graph)
        if new is graph:
            break
        graph = new
    return graph


def _canonicalize_once(graph: Graph) -> Graph:
    producer = {o.name: n for n in graph.nodes for o in n.outputs}
    users = graph.users()
    outputs = {v.name for v in graph.outputs}
    names = set(graph.values())
    alias: dict[str, Value] = {}
    new_nodes: list[Node] = []
    changed = False
    for n in graph.nodes:
        ins = [alias.get(v.name, v) for v in n.inputs]
        out = n.outputs[0]
        if n.op in _IDENTITY and out.name not in outputs and out.dtype.is_float:
            ident = _IDENTITY[n.op]
            for i, other in ((0, 1), (1, 0)):
                c = _constant_value(ins[i], producer)
                if c is not None and c == ident and not math.isnan(c) \
                        and tuple(ins[other].shape) == tuple(out.shape) \
                        and ins[other].dtype == out.dtype:
                    alias[out.name] = ins[other]
                    changed = True
                    break
            if out.name in alias:
                continue
        if get_op(n.op).category is Category.REDUCTION and n.attrs.get("keepdims") is False \
                and "axes" in n.attrs and out.name not in alias:
            keep = reduced_shape(tuple(ins[0].shape), reduction_axes(n), True)
            readers = users.get(out.name, [])
            back = [u for u in readers if u.op == "reshape" and tuple(u.outputs[0].shape) == keep
                    and u.outputs[0].name not in outputs]
            if back:
                i = 1
                while f"{out.name}.keep{i}" in names:
                    i += 1
                kept = Value(f"{out.name}.keep{i}", TensorType(out.dtype, keep))
                names.add(kept.name)
                new_nodes.append(Node(n.op, ins, [kept], {**n.attrs, "keepdims": True}, n.loc))
                for u in back:
                    alias[u.outputs[0].name] = kept
                if len(back) < len(readers) or out.name in outputs:
                    new_nodes.append(Node("reshape", [kept], [out], {"shape": tuple(out.shape)},
                                          n.loc))
                changed = True
                continue
        if n.op == "reshape" and n.outputs[0].name in alias:
            continue   # replaced by the keepdims reduction
        if any(a is not b for a, b in zip(ins, n.inputs, strict=True)):
            n = Node(n.op, ins, n.outputs, n.attrs, n.loc)
        new_nodes.append(n)
    if not changed:
        return graph
    outs = [alias.get(v.name, v) for v in graph.outputs]
    return Graph(graph.name, graph.inputs, graph.constants, new_nodes, outs, graph.base_dir)


def merge_common_subexpressions(graph: Graph) -> Graph:
    """`graph` with repeated pure computations merged into their first occurrence (see the
    module docstring). A node whose output is a graph output is kept, so output names stay."""
    outputs = {v.name for v in graph.outputs}
    first: dict[tuple, Node] = {}
    alias: dict[str, Value] = {}
    new_nodes: list[Node] = []
    changed = False
    for n in graph.nodes:
        ins = [alias.get(v.name, v) for v in n.inputs]
        key = (n.op, tuple(v.name for v in ins),
               tuple(sorted((k, _attr_key(v)) for k, v in n.attrs.items())),
               tuple((o.dtype.name, tuple(o.shape)) for o in n.outputs))
        prev = first.get(key)
        if prev is not None and not any(o.name in outputs for o in n.outputs):
            alias.update({o.name: p for o, p in zip(n.outputs, prev.outputs, strict=True)})
            changed = True
            continue
        node = n if all(a is b for a, b in zip(ins, n.inputs, strict=True)) else \
            Node(n.op, ins, n.outputs, n.attrs, n.loc)
        changed |= node is not n
        first.setdefault(key, node)
        new_nodes.append(node)
    if not changed:
        return graph
    return Graph(graph.name, graph.inputs, graph.constants, new_nodes, graph.outputs,
                 graph.base_dir)


def duplicate_cheap_producers(graph: Graph) -> Graph:
    users: dict[str, list[Node]] = graph.users()
    outputs = {v.name for v in graph.outputs}
    names = set(graph.values())
    new_nodes: list[Node] = []
    # Each consumer gets its own copy, created right before the consumer.
    replace: dict[tuple[int, str], Value] = {}
    dup_of: dict[str, Node] = {}
    for n in reversed(graph.nodes):  # consumers first: a copied consumer copies its inputs
        readers = users.get(n.outputs[0].name, [])
        if _cheap(n) and len(n.outputs) == 1 and n.outputs[0].name not in outputs and (
                len(readers) > 1 or any(r.outputs[0].name in dup_of for r in readers)):
            dup_of[n.outputs[0].name] = n
    for n in graph.nodes:
        if n.outputs[0].name in dup_of:
            continue  # emitted per consumer below
        ins = []
        for v in n.inputs:
            ins.append(_copy_chain(v, n, dup_of, replace, names, new_nodes))
        new_nodes.append(Node(n.op, ins, n.outputs, n.attrs, n.loc))
    return Graph(graph.name, graph.inputs, graph.constants, new_nodes, graph.outputs,
                 graph.base_dir)


def _copy_chain(v: Value, consumer: Node, dup_of, replace, names, new_nodes) -> Value:
    if v.name not in dup_of:
        return v
    key = (id(consumer), v.name)
    if key in replace:
        return replace[key]
    src = dup_of[v.name]
    ins = [_copy_chain(x, consumer, dup_of, replace, names, new_nodes) for x in src.inputs]
    i = 1
    while f"{v.name}.d{i}" in names:
        i += 1
    name = f"{v.name}.d{i}"
    names.add(name)
    out = Value(name, v.type)
    new_nodes.append(Node(src.op, ins, [out], src.attrs, src.loc))
    replace[key] = out
    return out
