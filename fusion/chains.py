"""Long elementwise chains, fused in one step: `chain_trees`, `LONG_CHAIN`.

The greedy planner (fusion.plan) prices and lowers a candidate at each merge; a chain of
n elementwise ops grows one op per merge, so planning it lowered n^2/2 ops (800 ops:
320,000 ops lowered, 13.6 s). Before the greedy pass, the planner looks for *in-trees of
links*: a link g -> h joins two single-node elementwise groups when h is the only group
reading g. Merging a whole in-tree into its root cannot create a cycle (only the root
has successors outside the tree). A tree of at least `LONG_CHAIN` ops is checked once,
as one candidate, with the planner's three checks (structure, resources, modelled gain);
when it passes it becomes one group, otherwise the greedy pass sees it as before. Shorter
trees (every chain in the shipped models) are left to the greedy pass, so their plans are
unchanged. This module finds the trees; fusion.plan checks and merges them.
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
