"""Finding attention in a primitive graph: the node sets that may become one "attention" group.

For every contraction `pv` whose lhs depends (through non-contraction nodes)
on exactly one other contraction `qk`, the candidate is

* `qk`, `pv` and every node on a path from qk's output to pv's lhs (scale,
  masks, the row softmax, casts, the GQA reshapes),
* the cheap side producers those nodes need (iota, full, broadcast_to and
  elementwise ops of them: a causal mask) when nothing outside reads them,
* the movement chains (reshape/transpose/slice) that feed q, k and v when
  nothing else reads them: the kernel loads the operands through them
  (strided loads), so head split/merge never becomes its own kernel.

Whether the candidate really is an attention (softmax over the key axis,
exp(x - max), div by the sum) is `hal.lowering.attention.match_attention`'s
call, and whether its tiles fit the device is `attention_tiles`'.
"""

from __future__ import annotations

from hal.ir.graph import Graph, Node
from hal.lowering.attention import match_attention
from hal.ops import Category, get_op

_SIDE = {Category.SOURCE, Category.BROADCAST, Category.ELEMENTWISE, Category.MOVEMENT}
_OPERAND_MOVES = {"reshape", "transpose", "slice", "broadcast_to"}


def _cat(n: Node) -> Category:
    return get_op(n.op).category


def attention_candidates(graph: Graph) -> list[list[Node]]:
    """Node lists (graph order) that may form one attention group each."""
    producer = {o.name: n for n in graph.nodes for o in n.outputs}
    users = graph.users()
    outs = {v.name for v in graph.outputs}
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    found: list[list[Node]] = []
    taken: set[int] = set()
    for pv in graph.nodes:
        if _cat(pv) is not Category.CONTRACTION:
            continue
        # ancestors of pv's lhs, stopping at contractions
        anc: dict[int, Node] = {}
        dots: list[Node] = []
        stack = [pv.inputs[0].name]
        while stack:
            p = producer.get(stack.pop())
            if p is None or id(p) in anc:
                continue
            if _cat(p) is Category.CONTRACTION:
                if p not in dots:
                    dots.append(p)
                continue
            anc[id(p)] = p
            stack.extend(v.name for v in p.inputs)
        if len(dots) != 1:
            continue
        qk = dots[0]
        between = _descendants_within(qk, anc, users)
        if not between:
            continue
        members = {id(n): n for n in [qk, pv, *between]}
        _add_side(members, between, producer, users, outs)
        for operand in (*qk.inputs, pv.inputs[1]):
            _add_operand_moves(members, operand.name, producer, users, outs)
        inner = [n for n in members.values() if n is not qk and n is not pv]
        if any(o.name in outs or any(id(u) not in members for u in users.get(o.name, []))
               for n in inner for o in n.outputs if n in between):
            continue  # an intermediate (scores, probabilities) is needed elsewhere
        if any(i in taken for i in members):
            continue
        nodes = sorted(members.values(), key=lambda n: order[id(n)])
        if isinstance(match_attention(nodes), str):
            continue
        taken.update(members)
        found.append(nodes)
    return found


def _descendants_within(qk: Node, anc: dict[int, Node], users) -> list[Node]:
    out: dict[int, Node] = {}
    stack = [o.name for o in qk.outputs]
    while stack:
        for u in users.get(stack.pop(), []):
            if id(u) in anc and id(u) not in out:
                out[id(u)] = u
                stack.extend(o.name for o in u.outputs)
    return list(out.values())


def _only_read_by(n: Node, members: dict[int, Node], users, outs) -> bool:
    return all(o.name not in outs and all(id(u) in members for u in users.get(o.name, []))
               for o in n.outputs)


def _add_side(members: dict[int, Node], between: list[Node], producer, users, outs) -> None:
    """Pull in cheap producers (masks from iota/compare, constants) read only by the group."""
    changed = True
    while changed:
        changed = False
        for n in list(members.values()):
            if n not in between and _cat(n) not in _SIDE:
                continue
            for v in n.inputs:
                p = producer.get(v.name)
                if p is None or id(p) in members or _cat(p) not in _SIDE:
                    continue
                if not _side_cheap(p, producer):
                    continue
                members[id(p)] = p
                if _only_read_by(p, members, users, outs):
                    changed = True
                else:
                    del members[id(p)]


def _side_cheap(n: Node, producer, depth: int = 0) -> bool:
    """A node computable from sources alone (no tensor read from memory besides small ones)."""
    if depth > 16:
        return False
    if _cat(n) is Category.SOURCE:
        return True
    if _cat(n) not in _SIDE:
        return False
    for v in n.inputs:
        p = producer.get(v.name)
        if p is None:
            if n.op != "broadcast_to":  # a broadcast of a (small) input or constant is fine
                return False
        elif not _side_cheap(p, producer, depth + 1):
            return False
    return True


def _add_operand_moves(members: dict[int, Node], name: str, producer, users, outs) -> None:
    p = producer.get(name)
    while p is not None and p.op in _OPERAND_MOVES and id(p) not in members:
        members[id(p)] = p
        if not _only_read_by(p, members, users, outs):
            del members[id(p)]
            return
        p = producer.get(p.inputs[0].name)
