"""`NodeMemo`: a per-translation memo of an analysis result per expression node.

codegen's analyses (`_Uniformity`, `_DataFlow`, ranges.`IndexRanges`) answer a question
about an expression by recursing over its children, and codegen asks it at every level
of a nested expression: without a memo the cost grows with the square of the depth.
Once an analysis has reached its fixpoint its answer for a node cannot change, so it
is kept by the node's identity (expressions are immutable; equal nodes at different
places are different keys, which costs a recomputation, never a wrong answer). An
entry holds its node, so an id is never reused while the memo lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class NodeMemo:
    """`memo.get(e, compute)`: compute(e) once per node object."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, Any]] = {}

    def get(self, node: Any, compute: Callable[[Any], Any]) -> Any:
        hit = self._by_id.get(id(node))
        if hit is None:
            hit = (node, compute(node))
            self._by_id[id(node)] = hit
        return hit[1]

    def __len__(self) -> int:
        return len(self._by_id)


__all__ = ["NodeMemo"]
