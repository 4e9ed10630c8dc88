"""Long elementwise chains, fused in few steps: `fuse_long_chains`, `chain_trees`.

The greedy planner (fusion.plan) prices and lowers a candidate at each merge; a chain of
n elementwise ops grows one op per merge, so planning it lowered n^2/2 ops (800 ops:
320,000 ops lowered, 13.6 s). Before the greedy pass, the planner looks for *in-trees of
links*: a link g -> h joins two single-node elementwise groups when h is the only group
reading g. Merging a whole in-tree into its root cannot create a cycle (only the root
has successors outside the tree). A tree of at least `LONG_CHAIN` ops is checked once,
as one candidate, with the planner's checks (structure, forbidden sets, resources, the
lowering, modelled gain); when it passes it becomes one group. A line (a chain without
branches) that fails as a whole, typically on the register estimate, is cut into
segments, each the longest run from where the last one ended that passes (found by
doubling then bisecting its length: O(n log n) ops lowered). Other trees that fail, and
shorter trees (every chain in the shipped models), are left to the greedy pass, so
their plans are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

LONG_CHAIN = 64


def chain_trees(succ: Mapping[int, Mapping[int, int]], groups: list[int],
                eligible: Callable[[int], bool], min_size: int = LONG_CHAIN) -> list[list[int]]:
    """In-trees of links among `groups` (see the module docstring) with at least
    `min_size` members, each listed leaves first and its root last. Linear in the groups
    and edges."""
    link: dict[int, int] = {}          # g -> the one group reading it
    for g in groups:
        out = succ.get(g, {})
        if len(out) == 1 and eligible(g):
            (h,) = out
            if eligible(h):
                link[g] = h
    feeders: dict[int, list[int]] = {}
    for g, h in link.items():
        feeders.setdefault(h, []).append(g)
    trees = []
    for root in (g for g in groups if g in feeders and g not in link):
        tree, stack = [], [root]
        while stack:
            x = stack.pop()
            tree.append(x)
            stack.extend(feeders.get(x, ()))
        if len(tree) >= min_size:
            trees.append(tree[::-1])
    return trees


def fuse_long_chains(planner) -> None:
    """Merge the long trees of `planner` (a fusion.plan planner) that pass its checks, and
    the longest passing segments of the lines that do not."""
    from hal.ops import Category, get_op

    def eligible(gid: int) -> bool:
        ns = planner.members[gid]
        return len(ns) == 1 and get_op(ns[0].op).category is Category.ELEMENTWISE

    for tree in chain_trees(planner.succ, sorted(planner.members), eligible):
        if _try(planner, tree):
            continue
        line = all(b in planner.succ.get(a, {}) for a, b in zip(tree, tree[1:], strict=False))
        if not line:
            continue
        start = 0
        while len(tree) - start >= 2:
            n = _longest(planner, tree, start)
            if n < 2:
                start += 1
                continue
            _try(planner, tree[start:start + n])
            start += n


def _longest(planner, tree: list[int], start: int) -> int:
    """The longest run tree[start:start + n] that passes the checks (1 when none does)."""
    left = len(tree) - start
    good, bad, n = 1, left + 1, 2
    while n <= left and _passes(planner, tree[start:start + n]) is not None:
        good, n = n, n * 2
    bad = min(bad, n)
    while bad - good > 1:
        mid = (good + bad) // 2
        if _passes(planner, tree[start:start + mid]) is not None:
            good = mid
        else:
            bad = mid
    return good


def _passes(planner, gids: list[int]) -> tuple[int, float] | None:
    """(bytes saved, time saved) when `gids` as one group passes the planner's checks."""
    from hal.errors import UnsupportedError

    from .structure import structural_veto

    nodes = sorted((n for g in gids for n in planner.members[g]),
                   key=lambda n: planner.order[id(n)])
    if structural_veto(nodes) or planner.forbidden_reason(nodes):
        return None
    try:
        cost_f = planner.cost(nodes)
    except UnsupportedError:
        return None
    if cost_f.registers > planner.spec.max_registers_per_thread or (
            planner.verify_lowering and planner.lowering_veto(planner.make(nodes))):
        return None
    sep = [planner.cost(planner.members[g]) for g in gids]
    saved_t = sum(x.time_s for x in sep) - cost_f.time_s
    if saved_t < 0:
        return None
    return sum(x.dram_bytes for x in sep) - cost_f.dram_bytes, saved_t


def _try(planner, gids: list[int]) -> bool:
    """Merge `gids` into its last group when it passes; logs the decision."""
    from .cost import fmt_bytes, fmt_time
    from .result import Decision

    ok = _passes(planner, gids)
    if ok is None:
        return False
    saved_b, saved_t = ok
    planner.decisions.append(Decision(
        planner.label(gids[0]), planner.label(gids[-1]), True,
        f"fused a chain of {len(gids)} elementwise ops at once: saves {fmt_bytes(saved_b)} "
        f"of DRAM traffic, ~{fmt_time(saved_t)}", saved_b, saved_t))
    planner.merge_many(gids[:-1], gids[-1])
    return True
