"""FusedGroup: a set of primitive nodes that becomes one kernel (or a short kernel sequence).

This module owns the record the fusion pass produces and the lowering consumes:

* `FusedGroup`: the nodes (primitives, topological), the values read from
  outside (`inputs`), the values needed outside (`outputs`: graph outputs or
  values read by later groups), the group `kind` (a hal.lowering.plan.GroupKind)
  that selects its planner and lowering, optional `hints` (a frozen PlanHints:
  choices forced instead of the planner's, e.g. ``PlanHints(split=4)``) and the
  `reasons` the fusion pass logged for its decisions. Everything decided about
  the group's kernels lives in its KernelPlan (hal.lowering.plan_group), not here.
* `group_kind(nodes)`: classifies a node list by its "heaviest" op category
  (contraction > reduction > scan > gather > movement > source > pointwise).
* `make_group(graph, nodes, name)`: computes inputs/outputs and the kind.
* `trivial_groups(graph)`: one group per primitive node (no fusion).

Reshape of a contiguous tensor is a view: `is_alias_group` says when a group
is a lone reshape, which a backend may execute as an alias of its input's
buffer (no kernel). The lowering still produces a copy kernel when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hal.errors import UnsupportedError
from hal.ir.graph import Graph, Node, Value
from hal.lowering.plan import NO_HINTS, GroupKind, PlanHints
from hal.ops import Category, get_op
from hal.ops.reduction import reduction_axes


@dataclass
class FusedGroup:
    name: str
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    kind: GroupKind
    hints: PlanHints = NO_HINTS
    reasons: list[str] = field(default_factory=list)

    @property
    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def __repr__(self) -> str:
        return (f"FusedGroup({self.name}, kind={self.kind}, ops={self.ops}, "
                f"in={[v.name for v in self.inputs]}, out={[v.name for v in self.outputs]})")


def is_row_reduction(node: Node) -> bool:
    """Reduces over a trailing contiguous run of axes (incl. all axes)."""
    axes = reduction_axes(node)
    rank = node.inputs[0].rank
    return bool(axes) and axes == tuple(range(rank - len(axes), rank))


# Precedence of categories when classifying a group: the first present wins.
_KIND_ORDER: list[tuple[Category, GroupKind | None]] = [
    (Category.CONTRACTION, GroupKind.MATMUL),
    (Category.REDUCTION, None),           # row or column: decided by the axes
    (Category.SCAN, GroupKind.SCAN),
    (Category.GATHER, GroupKind.GATHER),
    (Category.MOVEMENT, GroupKind.MOVEMENT),
]


def group_kind(nodes: Sequence[Node]) -> GroupKind:
    """Classify a node list: pointwise, row_reduction, column_reduction, matmul, attention
    (two contractions), movement, gather, scan or source."""
    cats = [get_op(n.op).category for n in nodes]
    if any(c is Category.COMPOSITE for c in cats):
        bad = next(n for n, c in zip(nodes, cats, strict=True) if c is Category.COMPOSITE)
        raise UnsupportedError(f"group contains composite op '{bad.op}'",
                               hint="decompose the graph first (hal.ops.decompose)")
    if cats.count(Category.CONTRACTION) >= 2:
        from hal.lowering.matmul import sibling_contractions

        # Contractions sharing their A operand are one "dual GEMM" matmul; otherwise two
        # chained ones are attention (dot -> softmax -> dot, validated by its lowering).
        if not isinstance(sibling_contractions(nodes), str):
            return GroupKind.MATMUL
        if cats.count(Category.CONTRACTION) == 2:
            return GroupKind.ATTENTION
    for cat, kind in _KIND_ORDER:
        if cat in cats:
            if kind is None:
                reds = [n for n, c in zip(nodes, cats, strict=True) if c is Category.REDUCTION]
                return GroupKind.ROW_REDUCTION if all(is_row_reduction(r) for r in reds) \
                    else GroupKind.COLUMN_REDUCTION
            if kind is GroupKind.MOVEMENT and any(c is Category.ELEMENTWISE for c in cats):
                return GroupKind.POINTWISE  # movement feeding elementwise: permuted loads
            return kind
    if cats and all(c is Category.SOURCE for c in cats):
        return GroupKind.SOURCE
    return GroupKind.POINTWISE


def make_group(graph: Graph, nodes: Sequence[Node], name: str, *,
               hints: PlanHints | None = None,
               reasons: Sequence[str] | None = None,
               users: dict[str, list[Node]] | None = None,
               order: dict[int, int] | None = None) -> FusedGroup:
    """Build a FusedGroup from `nodes` of `graph` (put in graph order). `users` (graph.users(),
    and `order` (id(node) -> position) save walks over the whole graph when groups are built
    many times."""
    if order is None:
        order = {id(n): i for i, n in enumerate(graph.nodes)}
    nodes = sorted(nodes, key=lambda n: order[id(n)])
    inside = {id(n) for n in nodes}
    produced = {v.name for n in nodes for v in n.outputs}
    inputs: list[Value] = []
    seen: set[str] = set()
    for n in nodes:
        for v in n.inputs:
            if v.name not in produced and v.name not in seen:
                seen.add(v.name)
                inputs.append(v)
    graph_outs = {v.name for v in graph.outputs}
    if users is not None:
        outputs = [v for n in nodes for v in n.outputs if v.name in graph_outs
                   or any(id(u) not in inside for u in users.get(v.name, ()))]
    else:
        read_outside = {v.name for n in graph.nodes if id(n) not in inside for v in n.inputs}
        outputs = [v for n in nodes for v in n.outputs
                   if v.name in graph_outs or v.name in read_outside]
    return FusedGroup(name, list(nodes), inputs, outputs, group_kind(nodes),
                      hints or NO_HINTS, list(reasons or []))


def trivial_groups(graph: Graph) -> list[FusedGroup]:
    """Each primitive node its own group (what runs before the fusion pass exists).
    Users and order are computed once: linear in the number of nodes (--no-fuse)."""
    users = graph.users()
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    return [make_group(graph, [n], f"g{i}_{n.op}", reasons=["unfused"], users=users,
                       order=order) for i, n in enumerate(graph.nodes)]


def is_alias_group(group: FusedGroup) -> bool:
    """A lone reshape: its output may alias its (contiguous) input buffer."""
    return len(group.nodes) == 1 and group.nodes[0].op == "reshape"
