"""Grid limits: a kernel's grid stays within what the device launches (`DeviceSpec.max_grid`).

CUDA (and HIP) allow 2^31 - 1 blocks on grid axis x but only 65535 on y and z, and
lowerings put a batch on y or z (batched matmul: batch on z; attention: batch x heads on
y). A batch of 70000 would lower to grid (1, 1, 70000), which cuLaunchKernel refuses.

`fit_grid` is applied to every kernel as it is built (LoweringContext.kernel): when an
axis exceeds its limit, the whole grid is folded into x, and each block recovers its
coordinates from the flat index (x = f % gx, y = f / gx % gy, z = f / (gx * gy)). The body
is rewritten once, replacing the block-index specials, so every backend (cpu_sim, CUDA,
HIP) runs the same folded kernel. Grids within the limits are left untouched.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hal.dtypes import i32
from hal.errors import UnsupportedError
from hal.kernel.ir import BLOCK_IDX_X, Binary, Const, Expr, Special, Stmt


def grid_fits(grid: tuple[int, int, int], limits: tuple[int, int, int]) -> bool:
    return all(g <= m for g, m in zip(grid, limits, strict=True))


def fit_grid(name: str, body: list[Stmt], grid: tuple[int, int, int],
             limits: tuple[int, int, int]) -> tuple[list[Stmt], tuple[int, int, int], bool]:
    """(body, grid, folded): `grid` unchanged when it fits `limits`, else folded into x."""
    grid = tuple(int(g) for g in grid)  # type: ignore[assignment]
    if grid_fits(grid, limits):
        return body, grid, False
    gx, gy, gz = grid
    total = gx * gy * gz
    if total > limits[0]:
        raise UnsupportedError(
            f"kernel {name}: grid {grid} has {total} blocks, more than the {limits[0]} one "
            "launch can address even folded into grid x",
            hint="split the batch across several graphs or launches")
    flat = BLOCK_IDX_X

    def c(v: int) -> Const:
        return Const(v, i32)

    y: Expr = Binary("div", flat, c(gx)) if gx > 1 else flat
    mapping: dict[str, Expr] = {
        "block_idx_x": Binary("remainder", flat, c(gx)) if gx > 1 else c(0),
        "block_idx_y": (Binary("remainder", y, c(gy)) if gz > 1 else y) if gy > 1 else c(0),
        "block_idx_z": Binary("div", flat, c(gx * gy)) if gx * gy > 1 else flat,
    }
    if gz == 1:
        mapping["block_idx_z"] = c(0)
    new_body = [_substitute(s, mapping) for s in body]
    return new_body, (total, 1, 1), True


def _substitute(node: Any, mapping: dict[str, Expr]) -> Any:
    """`node` with each block-index Special replaced by its folded expression."""
    if isinstance(node, Special):
        return mapping.get(node.kind, node)
    if isinstance(node, list):
        return [_substitute(x, mapping) for x in node]
    if isinstance(node, tuple):
        return tuple(_substitute(x, mapping) for x in node)
    if isinstance(node, (Expr, Stmt)) and dataclasses.is_dataclass(node):
        changes = {}
        for f in dataclasses.fields(node):
            old = getattr(node, f.name)
            new = _substitute(old, mapping)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node


def describe_fold(grid: tuple[int, int, int], limits: tuple[int, int, int]) -> str:
    """A note for the kernel's meta: which grid was folded and why."""
    over = [a for a, g, m in zip("xyz", grid, limits, strict=True) if g > m]
    return (f"grid {tuple(grid)} exceeds the device's limit on axis {', '.join(over)} "
            f"({', '.join(str(m) for m in limits)}): folded into grid x "
            f"({math.prod(grid)} blocks)")


__all__ = ["describe_fold", "fit_grid", "grid_fits"]
