"""`NodeMemo`: a per-translation memo of an analysis result per expression node.

ranges.`IndexRanges` answers a question about an expression by recursing over its
children, and codegen asks it at every level of a nested expression: without a memo
the cost grows with the square of the depth. Once an analysis has reached its fixpoint
its answer for a node cannot change, so it is kept by the node's identity (expressions
are immutable; equal nodes at different places are different keys, which costs a
recomputation, never a wrong answer). The memo holds every node it has an answer for,
so an id is never reused while the memo lives.
"""

from __future__ import annotations

from typing import Any

MISSING = object()   # (an answer may be None)


class NodeMemo:
    """Answers by node object: probe `memo.by_id.get(id(e), MISSING)` and `put(e, answer)`
    on a miss (the probe is the caller's own dict lookup: this runs once per node of every
    index expression, ranges.IndexRanges.interval)."""

    __slots__ = ("by_id", "_nodes")

    def __init__(self) -> None:
        self.by_id: dict[int, Any] = {}
        self._nodes: list[Any] = []   # keeps the ids of by_id taken

    def put(self, node: Any, answer: Any) -> Any:
        """Keep `answer` for `node`; returns it."""
        self.by_id[id(node)] = answer
        self._nodes.append(node)
        return answer

    def __len__(self) -> int:
        return len(self.by_id)


__all__ = ["MISSING", "NodeMemo"]
