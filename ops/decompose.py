"""decompose_graph: replace every composite node by its primitive decomposition.

The expansion repeats until no composite is left (composites may use other
composites, as attention uses softmax). Inputs, constants and outputs are kept;
each composite's outputs keep their names (and so do the graph's outputs), and
the new nodes take names prefixed by the first output's name (`y_0`, `y_1`,
...) and the composite's source location.
"""

from __future__ import annotations

from collections.abc import Callable

from hal.errors import GraphError
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Constant, Graph, Node, Value

from .registry import get_op

MAX_DEPTH = 16  # nesting levels of composites inside composites


def _expand_once(graph: Graph, keep: Callable[[Node], bool] | None = None
                 ) -> tuple[Graph, bool]:
    new = Graph(graph.name, base_dir=graph.base_dir)
    values: dict[str, Value] = {}

    def clone(v: Value) -> Value:
        values[v.name] = Value(v.name, v.type)
        return values[v.name]

    new.inputs = [clone(v) for v in graph.inputs]
    new.constants = [Constant(clone(c.value), c.init) for c in graph.constants]
    taken = set(graph.values())
    changed = False
    for node in graph.nodes:
        opdef = get_op(node.op)
        ins = [values[v.name] for v in node.inputs]
        if not opdef.is_composite or (keep is not None and keep(node)):
            new.nodes.append(Node(node.op, ins, [clone(o) for o in node.outputs],
                                  dict(node.attrs), node.loc))
            continue
        changed = True
        b = GraphBuilder.extending(new, prefix=f"{node.outputs[0].name}_", names=taken)
        start = len(new.nodes)
        results = opdef.decompose(b, ins, opdef.check_attrs(node.attrs))
        added = {id(n) for n in new.nodes[start:]}
        if len(results) != len(node.outputs):
            raise GraphError(f"graph {graph.name}: decomposition of {node.op} gave "
                             f"{len(results)} values for {len(node.outputs)} outputs")
        renamed: set[int] = set()
        for old, res in zip(node.outputs, results, strict=True):
            if res.type != old.type:
                raise GraphError(f"graph {graph.name}: decomposition of {node.op} gives "
                                 f"{res.type} for %{old.name}, declared {old.type}",
                                 hint=f"fix {node.op}'s decompose or infer rule")
            if res.producer is None or id(res.producer) not in added or id(res) in renamed:
                # An input passed through (or one value twice): copy it to carry the name.
                res = b.op("reshape", res, shape=res.shape)
            res.name = old.name
            renamed.add(id(res))
            values[old.name] = res
        for n in new.nodes[start:]:
            n.loc = n.loc or node.loc
            taken.update(o.name for o in n.outputs)
    new.outputs = [values[v.name] for v in graph.outputs]
    return new, changed


def decompose_graph(graph: Graph, keep: Callable[[Node], bool] | None = None) -> Graph:
    """A new, verified graph in which every composite op is expanded into primitives,
    except the composite nodes for which `keep(node)` is true (the reference evaluates
    large attention nodes blocked, hal.reference_blocked)."""
    current, changed = _expand_once(graph, keep)
    for _ in range(MAX_DEPTH):
        if not changed:
            return current.verify()
        current, changed = _expand_once(current, keep)
    raise GraphError(f"graph {graph.name}: composites still remain after {MAX_DEPTH} "
                     f"expansions", hint="a composite's decomposition refers back to itself")
