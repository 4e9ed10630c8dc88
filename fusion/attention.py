"""Finding attention in a primitive graph: the node sets that may become one "attention" group.

For every contraction `pv` whose lhs depends (through non-contraction nodes)
on exactly one other contraction `qk`, the candidate is

* `qk`, `pv` and every node on a path from qk's output to pv's lhs (scale,
  masks, the row softmax, casts, the GQA reshapes),
* the cheap side producers those nodes need (iota, full, broadcast_to and
  elementwise ops of them: a causal mask) when nothing outside reads them,
* the operand prologues: the producer chains of q, k and v made of elementwise,
  movement, broadcast and source nodes (head split/merge reshapes and transposes,
  rotary embedding's mul by cos, rotate_half's slice/neg/concat, mul by sin, add,
  casts, and the cos/sin tables themselves when they are computed from iota and
  constants) whose values nothing outside the group reads and that are not graph
  outputs. The kernel computes them while it loads a Q, K or V tile (the group's
  ScalarBuilder evaluates them at the tile's coordinates, rounding where the graph
  rounds), so neither the head split nor the rotary embedding becomes its own
  kernel. The chains stop at reductions, contractions, gathers and scans and at
  values read elsewhere: those are the group's inputs. An operand whose chain
  exceeds MAX_PROLOGUE nodes keeps only its plain movement chain
  (reshape/transpose/slice/broadcast_to). K and V tiles are loaded once per tile of
  query rows, so their prologue is recomputed that often (fusion.cost counts it).

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
MAX_PROLOGUE = 64   # nodes pulled into the group per operand (planning stays fast)


def _cat(n: Node) -> Category:
    return get_op(n.op).category


def attention_candidates(graph: Graph, prologues: bool = True) -> list[list[Node]]:
    """Node lists (graph order) that may form one attention group each. `prologues=False`:
    the operands' plain movement chains only (the planner prices both and keeps the
    prologue inside only when the model says it pays)."""
    if sum(_cat(n) is Category.CONTRACTION for n in graph.nodes) < 2:
        return []   # (an attention holds two; most graphs have none: no walk over them)
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
        operands = [v.name for v in (*qk.inputs, pv.inputs[1])]
        if prologues:
            _add_operand_prologues(members, operands, producer, users, outs)
        else:
            cand: dict[int, Node] = {}
            for name in operands:
                _add_operand_moves(cand, name, producer, members)
            _drop_read_elsewhere(cand, members, users, outs)
            members.update(cand)
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


def _add_operand_moves(cand: dict[int, Node], name: str, producer,
                       members: dict[int, Node]) -> None:
    """The movement chain (reshape/transpose/slice/broadcast_to) feeding operand `name` into
    `cand`; whether only the group reads it is checked with the other candidates."""
    p = producer.get(name)
    while p is not None and p.op in _OPERAND_MOVES and id(p) not in members \
            and id(p) not in cand:
        cand[id(p)] = p
        p = producer.get(p.inputs[0].name)


def _add_operand_prologues(members: dict[int, Node], operands: list[str], producer, users,
                           outs) -> None:
    """Pull in the elementwise/movement/broadcast/source producer chains of the operands
    (q, k, v) whose values only the group reads (see the module docstring)."""
    cand: dict[int, Node] = {}
    for name in operands:
        chain: dict[int, Node] = {}
        queue, head, complete = [name], 0, True
        while head < len(queue):   # breadth first: the nodes nearest the operand first
            p = producer.get(queue[head])
            head += 1
            if p is None or id(p) in members or id(p) in chain or _cat(p) not in _SIDE:
                continue
            if len(chain) >= MAX_PROLOGUE:
                complete = False
                break
            chain[id(p)] = p
            queue.extend(v.name for v in p.inputs)
        if complete:
            cand.update(chain)
        else:  # too long to recompute per tile load: the plain movement chain only
            _add_operand_moves(cand, name, producer, members)
    _drop_read_elsewhere(cand, members, users, outs)
    members.update(cand)


def _drop_read_elsewhere(cand: dict[int, Node], members: dict[int, Node], users,
                         outs) -> None:
    """A value needed outside the group (or a graph output) is an input of the group: drop
    its producer, then whatever only fed it, until every pulled node is read by members."""
    changed = True
    while changed:
        changed = False
        for i, n in list(cand.items()):
            if any(o.name in outs or any(id(u) not in members and id(u) not in cand
                                         for u in users.get(o.name, []))
                   for o in n.outputs):
                del cand[i]
                changed = True
