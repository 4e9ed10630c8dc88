"""Graph rewrites that prepare a graph for fusion.

`merge_common_subexpressions`: nodes applying the same op with the same attributes
to the same inputs become one (hal's ops are pure). Frameworks repeat work that a
human would write once: torch.export gives each nn.Linear its own `view` of the
normalised activations, so without this the Q, K and V projections would read three
different values and could never share their A operand (one sibling kernel).

`duplicate_cheap_producers`: a broadcast_to of a small tensor, a `full` or an
`iota` read by several consumers is copied once per consumer, so that each
copy fuses into its consumer instead of forcing one materialised tensor.
"""

from __future__ import annotations

from hal.ir.graph import Graph, Node, Value, _attr_key
from hal.ops import Category, get_op

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
