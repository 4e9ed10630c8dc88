"""plan(graph, spec): the fusion pass.

Greedy, priority-ordered merging in the spirit of XLA's priority fusion, with
every decision checked three ways before it is taken:

1. structure: the merged group must be a kind hal lowers (a pointwise chain,
   with data movement (reshape, transpose, slice, concat, pad, broadcast)
   anywhere in it as index math on loads; a row reduction with elementwise
   and movement prologue, elementwise epilogue and broadcast-back, all
   reductions over the same rows; one contraction whose operands may come
   through casts and movement (strided loads) with an elementwise epilogue, or
   several sibling contractions sharing A with equal output shapes (a dual
   GEMM: gate and up of a SwiGLU) whose epilogue combines them elementwise,
   or sibling contractions sharing A with different output shapes (a fused
   QKV projection with grouped-query attention: one column-panel segment of
   the grid per contraction) whose epilogues each read one of them and each
   pass these rules alone;
   an attention: dot -> logits -> row softmax -> dot; fusion.structure) and must
   not create a cycle between groups;
2. resources: the lowering is asked for the kernel(s) it would emit, and the
   merge is vetoed when they exceed the spec (shared memory / LDS per block,
   threads per block) or when the estimated registers per thread exceed the
   spec's limit (spills);
3. benefit: the cost model (fusion.cost) must not predict a longer time than
   the two groups apart.

Attention is matched first (fusion.attention finds the node sets,
hal.lowering.attention validates them and picks tiles from the spec); an
attention whose tiles do not fit is left to the greedy pass, with the reason.
Candidates are tried in order of the DRAM bytes they would save, largest
first. Every decision is logged once with its reason (a rejected pair is not
logged again as its groups grow). Groups reading the same value are then
merged as siblings: pointwise with pointwise, row reduction with row
reduction, and matmul with matmul when their contractions share A (one
kernel reads A for all of them), under the same three checks. Cheap
producers (broadcast_to of small tensors, full, iota) are duplicated into
each consumer first, as XLA does, so they never force a round trip through
DRAM. The result is a FusionPlan with its logged Decisions (fusion.result).
"""

from __future__ import annotations

from hal.devices.spec import DeviceSpec
from hal.errors import HalError, UnsupportedError
from hal.ir.graph import Graph, Node
from hal.lowering.memo import Memo, group_key, keep_lowering
from hal.lowering.options import DEFAULT_OPTIONS
from hal.ops import Category

from .cost import GroupCost, fmt_bytes, fmt_time, group_cost
from .group import FusedGroup, make_group
from .result import Decision, FusionPlan
from .rewrite import (
    canonicalize_reductions,
    duplicate_cheap_producers,
    merge_common_subexpressions,
)
from .structure import _cat, structural_veto
from .veto_reuse import same_verdict

# Lowering-veto verdicts by (candidate signature, spec) across plans (_Planner.lowering_veto)
VETOES = Memo("fusion_vetoes", 4096)


# --------------------------------------------------------------------------- the planner


class _Planner:
    def __init__(self, graph: Graph, spec: DeviceSpec, verify_lowering: bool):
        self.graph = graph
        self.spec = spec
        self.verify_lowering = verify_lowering
        self.order = {id(n): i for i, n in enumerate(graph.nodes)}
        self.group_of: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        self.members: dict[int, list[Node]] = {i: [n] for i, n in enumerate(graph.nodes)}
        self.producer = {o.name: n for n in graph.nodes for o in n.outputs}
        self.decisions: list[Decision] = []
        self._cost_cache: dict[tuple, GroupCost] = {}
        self._rejected: set[tuple] = set()
        self._kinds: dict[tuple, str] = {}
        self._gkeys: dict[int, tuple] = {}
        self._logged: set[tuple] = set()
        self.extra_reasons: dict[tuple, list[str]] = {}
        # node sets a compiler found over the limits (fusion.measured): never one kernel
        self.forbidden: list[tuple[frozenset[str], str]] = []
        self._users = graph.users()
        self._outs = {v.name for v in graph.outputs}
        self._sig_cost: dict[tuple, GroupCost] = {}
        self._sig_veto: dict[tuple, str | None] = {}
        # keys of the node sets that passed the lowering veto (what fusion.veto_reuse grows)
        self._vetted: set[tuple] = set()
        # per node (and group input), by identity, the parts of signature() and group_key()
        # that do not depend on the group: candidates share their nodes (the graph is fixed)
        self._sig_parts: dict[int, tuple] = {}
        self._key_parts: dict[int, tuple] = {}
        # group -> {neighbour group: bytes}, kept up to date by merge()
        self.succ: dict[int, dict[int, int]] = {}
        self.pred: dict[int, dict[int, int]] = {}
        for (a, b), nb in self._initial_edges().items():
            self.succ.setdefault(a, {})[b] = nb
            self.pred.setdefault(b, {})[a] = nb

    # -- groups ------------------------------------------------------------
    def make(self, nodes: list[Node], name: str = "cand") -> FusedGroup:
        return make_group(self.graph, nodes, name, users=self._users, order=self.order)

    def kind(self, gid: int) -> str:
        """The group kind of group `gid` as it stands (cached per node set)."""
        k = self.gkey(gid)
        if k not in self._kinds:
            self._kinds[k] = make_group(self.graph, self.members[gid], "kind", users=self._users,
                                        order=self.order).kind
        return self._kinds[k]

    def gkey(self, gid: int) -> tuple:
        """key() of group `gid`'s current nodes (cached until it merges)."""
        k = self._gkeys.get(gid)
        if k is None:
            k = self._gkeys[gid] = self.key(self.members[gid])
        return k

    def key(self, nodes: list[Node]) -> tuple:
        return tuple(sorted(self.order[id(n)] for n in nodes))

    def cost(self, nodes: list[Node], group: FusedGroup | None = None,
             sig: tuple | None = None) -> GroupCost:
        """The cost of one kernel of `nodes`; `group` (make(nodes)) and `sig` (its
        signature) when the caller has built them."""
        k = self.key(nodes)
        if k not in self._cost_cache:
            g = group if group is not None else self.make(nodes)
            if sig is None:
                sig = self.signature(g)  # the layers of a model repeat: price each once
            if sig not in self._sig_cost:
                self._sig_cost[sig] = group_cost(g, self.spec)
            self._cost_cache[k] = self._sig_cost[sig]
        return self._cost_cache[k]

    def signature(self, g: FusedGroup) -> tuple:
        return signature(g, self._sig_parts)

    def group_key(self, g: FusedGroup) -> tuple:
        return group_key(g, self._key_parts)

    def label(self, gid: int) -> str:
        nodes = self.members[gid]
        return "+".join(n.op for n in nodes[:4]) + ("+..." if len(nodes) > 4 else "") + \
            f"(%{nodes[-1].outputs[0].name})"

    # -- graph of groups -----------------------------------------------------
    def edges(self) -> dict[tuple[int, int], int]:
        """(producer group, consumer group) -> bytes of values flowing between them."""
        return {(a, b): nb for a, d in self.succ.items() for b, nb in d.items()}

    def _initial_edges(self) -> dict[tuple[int, int], int]:
        out: dict[tuple[int, int], int] = {}
        for n in self.graph.nodes:
            c = self.group_of[id(n)]
            seen = set()
            for v in n.inputs:
                p_node = self.producer.get(v.name)
                if p_node is None or v.name in seen:
                    continue
                seen.add(v.name)
                p = self.group_of[id(p_node)]
                if p != c:
                    out[(p, c)] = out.get((p, c), 0) + v.type.nbytes
        return out

    def creates_cycle(self, p: int, c: int, edges=None) -> bool:
        """Would merging p and c close a cycle (a path p -> x -> c through another group)?"""
        stack = [x for x in self.succ.get(p, ()) if x != c]
        seen = set(stack)
        while stack:
            x = stack.pop()
            if x == c:
                return True
            for y in self.succ.get(x, ()):
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return False

    def merge(self, p: int, c: int) -> None:
        nodes = sorted(self.members[p] + self.members[c], key=lambda n: self.order[id(n)])
        for n in self.members[p]:
            self.group_of[id(n)] = c
        self.members[c] = nodes
        del self.members[p]
        self._gkeys.pop(p, None)
        self._gkeys.pop(c, None)
        for b, nb in self.succ.pop(p, {}).items():
            self.pred[b].pop(p, None)
            if b != c:
                self.succ.setdefault(c, {})[b] = self.succ.get(c, {}).get(b, 0) + nb
                self.pred[b][c] = self.pred[b].get(c, 0) + nb
        for a, nb in self.pred.pop(p, {}).items():
            self.succ[a].pop(p, None)
            if a != c:
                self.pred.setdefault(c, {})[a] = self.pred.get(c, {}).get(a, 0) + nb
                self.succ[a][c] = self.succ[a].get(c, 0) + nb
        self.succ.get(c, {}).pop(c, None)
        self.pred.get(c, {}).pop(c, None)

    # -- one candidate ------------------------------------------------------
    def try_merge(self, p: int, c: int, flow_bytes: int, edges, sibling: bool = False) -> bool:
        k = tuple(sorted(self.gkey(p) + self.gkey(c)))   # = key(nodes), from cached keys
        if k in self._rejected:
            return False
        nodes = sorted(self.members[p] + self.members[c], key=lambda n: self.order[id(n)])
        lp, lc = self.label(p), self.label(c)

        def reject(reason: str) -> bool:
            self._rejected.add(k)
            pk, ck = (self.gkey(p), reason), (self.gkey(c), reason)
            if pk not in self._logged and ck not in self._logged:  # each pair's reason once
                self.decisions.append(Decision(lp, lc, False, "not fused: " + reason))
            self._logged.update((pk, ck))
            return False

        veto = structural_veto(nodes) or self.forbidden_reason(nodes)
        if veto:
            return reject(veto)
        if not sibling and self.creates_cycle(p, c, edges):
            return reject("another kernel sits between them (fusing would create a cycle)")
        cand = self.make(nodes)
        sig = self.signature(cand)
        cost_sep = self.cost(self.members[p]), self.cost(self.members[c])
        try:
            cost_f = self.cost(nodes, cand, sig)
        except UnsupportedError as e:   # the group kind cannot plan this candidate kernel
            return reject(f"no kernel plan: {e.message}")
        if cost_f.registers > self.spec.max_registers_per_thread:
            return reject(f"~{cost_f.registers} registers per thread, {self.spec.name} allows "
                          f"{self.spec.max_registers_per_thread} (would spill)")
        if self.verify_lowering:
            if sig not in self._sig_veto:
                grown = next((self.members[g] for g in (p, c) if self.gkey(g) in self._vetted
                              and self.kind(g) == "matmul"), None)
                self._sig_veto[sig] = self.lowering_veto(cand, sig, grown)
            why = self._sig_veto[sig]
            if why:
                return reject(why)
            self._vetted.add(k)
        saved_b = sum(x.dram_bytes for x in cost_sep) - cost_f.dram_bytes
        saved_t = sum(x.time_s for x in cost_sep) - cost_f.time_s
        if saved_t < 0 or (saved_t == 0 and saved_b <= 0 and not _free_member(
                self.members[p], self.members[c])):
            return reject(f"no modelled gain ({fmt_bytes(saved_b)} saved, "
                          f"{fmt_time(-saved_t)} slower)")
        what = "fused siblings" if sibling else "fused"
        self.decisions.append(Decision(lp, lc, True, f"{what}: saves {fmt_bytes(saved_b)} of DRAM "
                                       f"traffic, ~{fmt_time(saved_t)}", saved_b, saved_t))
        self.merge(p, c)
        return True

    def forbidden_reason(self, nodes: list[Node]) -> str | None:
        names = {o.name for n in nodes for o in n.outputs}
        return next((why for fs, why in self.forbidden if fs <= names), None)

    def lowering_veto(self, cand: FusedGroup, sig: tuple | None = None,
                      grown: list[Node] | None = None) -> str | None:
        """Why the candidate's kernels cannot run on the spec (the lowering refuses it or
        its kernels exceed shared memory or threads per block), or None. The verdict is a
        function of the candidate's structure and the spec (the within-plan `_sig_veto`
        already shares it between a model's repeated layers); across plans it is kept in
        VETOES by (signature, spec): a None verdict serves every candidate of that
        structure, a reason (whose text may name values) only the same named candidate.
        `sig`: signature(cand), when the caller has it. `grown`: the nodes of a group that
        passed the veto and that `cand` grows; when `cand` only adds epilogue elements to it
        that provably keep its lowering's verdict (fusion.veto_reuse), that verdict is
        given without lowering `cand`."""
        key = (sig or self.signature(cand), self.spec)
        hit = VETOES.lookup(key)
        gkey = self.group_key(cand)
        if hit is not None and (hit[1] is None or hit[0] == gkey):
            return hit[1]
        if grown is not None and same_verdict(cand, self.make(grown), self.spec,
                                              self._plan_of):
            why = None
        else:
            why = self._lower_and_check(cand, gkey)
        VETOES.put(key, (None if why is None else gkey, why))
        return why

    def _plan_of(self, g: FusedGroup):
        from hal.lowering import plan_group

        return plan_group(g, self.spec, self.group_key(g))

    def _lower_and_check(self, cand: FusedGroup, gkey: tuple) -> str | None:
        """lowering_veto's verdict for `cand` (`gkey`: its group_key), lowering it."""
        from hal.lowering import lower_group

        try:
            kernels = lower_group(cand, self.spec, gkey=gkey)
        except UnsupportedError as e:
            return f"the {cand.kind} lowering cannot take it ({e.message})"
        except HalError as e:  # a lowering bug must not break planning: keep groups apart
            return f"lowering failed ({e.message})"
        for k in kernels:
            if k.shared_bytes > self.spec.shared_mem_per_block:
                return (f"kernel needs {fmt_bytes(k.shared_bytes)} of shared memory, "
                        f"{self.spec.name} allows {fmt_bytes(self.spec.shared_mem_per_block)} "
                        f"per block")
            if k.block > self.spec.max_threads_per_block:
                return f"{k.block} threads per block exceed {self.spec.max_threads_per_block}"
        keep_lowering(cand, self.spec, DEFAULT_OPTIONS, kernels, gkey)   # for the final group's
        return None

    # -- passes ---------------------------------------------------------------
    def attention(self) -> None:
        """Make each attention (fusion.attention) one group when its tiles fit the device."""
        from hal.lowering.attention import plan_attention

        from .attention import attention_candidates

        narrow = {id(ns[-1]): ns for ns in attention_candidates(self.graph, prologues=False)}
        for nodes in attention_candidates(self.graph):
            nodes = self._prologue_or_not(nodes, narrow.get(id(nodes[-1])))
            cand = make_group(self.graph, nodes, "attention", users=self._users, order=self.order)
            planned = plan_attention(cand, self.spec)
            label = f"{nodes[0].op}(%{nodes[0].outputs[0].name})"
            last = f"dot_general(%{nodes[-1].outputs[0].name})"
            if isinstance(planned, str):
                self.decisions.append(Decision(label, last, False,
                                               f"attention not fused on {self.spec.name}: "
                                               f"{planned}"))
                continue
            why = self.forbidden_reason(nodes)
            if self.verify_lowering and not why:
                cand = self.make(nodes)
                sig = self.signature(cand)
                if sig not in self._sig_veto:
                    self._sig_veto[sig] = self.lowering_veto(cand, sig)
                why = self._sig_veto[sig]
            if why:
                self.decisions.append(Decision(label, last, False, f"attention not fused: {why}"))
                continue
            gids = sorted({self.group_of[id(n)] for n in nodes})
            sep = sum(self.cost(self.members[g]).dram_bytes for g in gids)
            fused = self.cost(nodes).dram_bytes
            reason = f"saves {fmt_bytes(sep - fused)} of DRAM traffic (scores stay on chip)"
            target = gids[-1]
            for g in gids[:-1]:
                self.merge(g, target)
            self.extra_reasons[self.key(nodes)] = [reason, *self.extra_reasons.get(self.key(nodes), [])]
            from hal.lowering import plan_group

            kp = plan_group(cand, self.spec, self.group_key(cand))   # the kernel's own plan
            ts = kp.tile_sizes
            on = f", {kp.math.name}" if kp.math.matrix else ""
            self.decisions.append(Decision(label, last, True,
                                           f"fused attention ({len(nodes)} ops, Br={ts['br']}, "
                                           f"Bc={ts['bc']}{on}): {reason}", sep - fused))

    def _prologue_or_not(self, wide: list[Node], narrow: list[Node] | None) -> list[Node]:
        """Keep the operands' elementwise prologues (rotary) inside the attention kernel
        only when the model says it pays: K and V prologues are recomputed per tile of
        query rows, and a prologue reading a wider input re-reads more bytes."""
        if narrow is None or len(narrow) == len(wide):
            return wide
        ids = {id(n) for n in narrow}
        extra = [n for n in wide if id(n) not in ids]
        try:
            inside = self.cost(wide)
            apart = (self.cost(narrow), self.cost(extra))
        except HalError:  # a variant the cost model cannot price: keep the plain one
            return narrow
        t_apart = sum(c.time_s for c in apart)
        label = f"{len(extra)} prologue ops of the attention operands"
        if inside.time_s <= t_apart:
            self.extra_reasons[self.key(wide)] = [
                f"{label} computed in the tile loads: {fmt_time(t_apart - inside.time_s)} "
                f"faster than a kernel of their own"]
            return wide
        self.decisions.append(Decision(label, f"dot_general(%{wide[-1].outputs[0].name})",
                                       False, f"not fused into the attention: recomputing "
                                       f"them per tile costs {fmt_time(inside.time_s - t_apart)}"
                                       f" more than a kernel of their own"))
        return narrow

    def long_chains(self) -> None:
        """Fuse long chains of elementwise ops in few steps (fusion.chains)."""
        from .chains import fuse_long_chains

        fuse_long_chains(self)

    def merge_many(self, gids: list[int], target: int) -> None:
        """merge(g, target) for every g in `gids`, with one sort of the members."""
        for g in gids:
            members, self.members[target] = self.members[target], []
            self.merge(g, target)          # merge() sorts an empty list plus g's nodes
            members.extend(self.members[target])
            self.members[target] = members
        self.members[target].sort(key=lambda n: self.order[id(n)])

    def producer_consumer(self) -> None:
        """Rounds over the edges, largest flow first; stale candidates are skipped."""
        changed = True
        while changed:
            changed = False
            # largest flow first; at equal flow a matmul's epilogue before a reduction's
            # prologue (a residual add belongs after the projection, so the norm that
            # follows can become the next matmul's prologue)
            for (p, c), nbytes in sorted(self.edges().items(), key=lambda kv: (
                    -kv[1], self.kind(kv[0][0]) != "matmul", kv[0])):
                if p in self.members and c in self.members and c in self.succ.get(p, {}) \
                        and self.try_merge(p, c, nbytes, None):
                    changed = True

    def siblings(self) -> None:
        changed = True
        while changed:
            changed = False
            readers: dict[str, list[int]] = {}
            for gid, nodes in self.members.items():
                names = {v.name for n in nodes for v in n.inputs}
                produced = {o.name for n in nodes for o in n.outputs}
                for name in names - produced:
                    readers.setdefault(name, []).append(gid)
            for _name, gids in readers.items():
                gids = sorted(set(gids))
                for i in range(len(gids)):
                    for j in range(i + 1, len(gids)):
                        a, b = gids[i], gids[j]
                        if a not in self.members or b not in self.members:
                            continue
                        # cheap tests first (a value read by every layer, such as the rope
                        # tables, makes many pairs): kinds, pairs already refused, then cycles
                        ka, kb = self.kind(a), self.kind(b)
                        # matmul siblings: contractions sharing A (a fused QKV projection);
                        # structural_veto says why others stay apart
                        if ka != kb or ka not in ("pointwise", "row_reduction", "matmul"):
                            continue
                        if tuple(sorted(self.gkey(a) + self.gkey(b))) in self._rejected:
                            continue
                        if self.creates_cycle(a, b) or self.creates_cycle(b, a):
                            continue
                        if self.try_merge(a, b, 0, None, sibling=True):
                            changed = True

    def result(self) -> FusionPlan:
        groups, costs = [], {}
        ordered = sorted(self.members.values(), key=lambda ns: self.order[id(ns[0])])
        for i, nodes in enumerate(ordered):
            g = self.make(nodes, name=f"k{i}_{g_kind_name(nodes)}")
            costs[g.name] = cost = group_cost(g, self.spec)
            if cost.plan is not None:   # the plan's decisions, with their reasons
                g.reasons.extend(cost.plan.reasons)
            g.reasons.extend(self.extra_reasons.get(self.key(nodes), []))
            if len(nodes) > 1:
                g.reasons.insert(0, f"fused {len(nodes)} ops: {', '.join(n.op for n in nodes)}")
            groups.append(g)
        return FusionPlan(self.graph, _topological(groups), self.spec, costs, self.decisions)


def signature(g: FusedGroup, node_parts: dict | None = None) -> tuple:
    """The structure of a group without its value names: equal for a model's repeated layers.
    `node_parts`: a dict the caller keeps while its graph does not change (the planner),
    holding each node's op, attributes and output types by identity."""
    local: dict[str, int] = {v.name: i for i, v in enumerate(g.inputs)}
    parts: list[tuple] = [tuple((v.dtype.name, tuple(v.shape)) for v in g.inputs)]
    for n in g.nodes:
        ins = tuple(local.get(v.name, -1) for v in n.inputs)
        for o in n.outputs:
            local[o.name] = len(local)
        own = node_parts.get(id(n)) if node_parts is not None else None
        if own is None:
            own = _node_structure(n)
            if node_parts is not None:
                node_parts[id(n)] = own
        op, attrs, outs = own
        parts.append((op, attrs, ins, outs))
    parts.append(tuple(local[v.name] for v in g.outputs))
    return (g.kind, tuple(parts))


def _node_structure(n: Node) -> tuple[str, str, tuple]:
    """A node's part of signature() that does not depend on the group: op, attributes,
    output types."""
    return (n.op, repr(sorted(n.attrs.items())),
            tuple((o.dtype.name, tuple(o.shape)) for o in n.outputs))


def _free_member(a: list[Node], b: list[Node]) -> bool:
    """One side is a lone reshape (a free alias): merging it costs nothing and saves a group."""
    return any(len(ns) == 1 and ns[0].op == "reshape" for ns in (a, b))


def _dual_matmul(nodes: list[Node]) -> bool:
    """Several contractions that share A in one matmul kernel (hal.lowering.matmul): a dual
    GEMM (one tile grid) or siblings of different shapes (one grid segment each)."""
    from hal.lowering.matmul import sibling_contractions

    dots = sibling_contractions(nodes)
    return not isinstance(dots, str) and len(dots) > 1


def g_kind_name(nodes: list[Node]) -> str:
    """The kernel name's kind part: the heaviest op, "attention", "dual_<op>" for a dual
    GEMM and "multi_<op>" for sibling contractions of different shapes (e.g. Q, K, V)."""
    cats = [_cat(n) for n in nodes]
    if cats.count(Category.CONTRACTION) == 2 and not _dual_matmul(nodes):
        return "attention"
    if cats.count(Category.CONTRACTION) > 1:
        from hal.lowering.matmul import sibling_segments

        prefix = "multi_" if sibling_segments(nodes) is not None else "dual_"
        return prefix + nodes[cats.index(Category.CONTRACTION)].op
    for cat in (Category.CONTRACTION, Category.REDUCTION):
        if cat in cats:
            return nodes[cats.index(cat)].op
    return nodes[-1].op


def _topological(groups: list[FusedGroup]) -> list[FusedGroup]:
    """Order groups so that every group runs after the groups producing its inputs."""
    producer_of = {o.name: g.name for g in groups for n in g.nodes for o in n.outputs}
    by_name = {g.name: g for g in groups}
    done: set[str] = set()
    out: list[FusedGroup] = []

    def visit(g: FusedGroup, stack: tuple = ()):
        if g.name in done:
            return
        for v in g.inputs:
            p = producer_of.get(v.name)
            if p is not None and p != g.name and p not in stack:
                visit(by_name[p], stack + (g.name,))
        done.add(g.name)
        out.append(g)

    for g in groups:
        visit(g)
    return out


def plan(graph: Graph, spec: DeviceSpec, *, fuse: bool = True,
         verify_lowering: bool = True, measure: str | None = "auto") -> FusionPlan:
    """Fuse `graph` for `spec`. `fuse=False` gives the unfused plan (one kernel per primitive).

    `measure` asks the real compiler for registers and spills of the fused kernels and
    re-plans without the groups over the limits (fusion.measured): "auto" (when a compiler
    is installed and the plan is small; HAL_MEASURE=off disables), "on", a compiler name,
    or None / "off".
    """
    from hal.ops.decompose import decompose_graph

    g = decompose_graph(graph)
    if fuse:
        g = duplicate_cheap_producers(merge_common_subexpressions(canonicalize_reductions(g)))

    def run(forbidden: list[tuple[frozenset[str], str]]) -> FusionPlan:
        planner = _Planner(g, spec, verify_lowering)
        planner.forbidden = forbidden
        if fuse:
            planner.attention()
            planner.long_chains()
            planner.producer_consumer()
            planner.siblings()
            # siblings can unblock producers: a norm read by Q, K and V fuses into their
            # one sibling kernel only once they are one group
            planner.producer_consumer()
        return planner.result()

    result = run([])
    if fuse and measure not in (None, "off"):
        from .measured import refine

        result = refine(result, run, measure)
    from .memory import check_device_memory

    check_device_memory(result.graph, result.groups, spec)
    return result
