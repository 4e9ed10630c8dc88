"""Planted lowering faults for the conformance self-test (`hal conformance --self-test`).

Each fault is a named, deliberate bug that a hook inside hal.lowering switches
on (`if faults.active("missing_barrier"): ...`), one to three lines at the
exact place the real bug would live. The conformance suite must catch every
one of them, by a numeric mismatch or by a simulator check (race,
out_of_bounds). Nothing is active unless `planted(name)` is entered or the
environment variable HAL_FAULT names the fault (so worker processes inherit it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hal.errors import HalError

ENV_VAR = "HAL_FAULT"

FAULTS: dict[str, str] = {}


def register_fault(name: str, description: str) -> None:
    """Declare a fault a lowering hook can plant (the extension point for new ones)."""
    FAULTS[name] = description


register_fault("off_by_one_mask", "pointwise tail mask `i <= numel` instead of `i < numel`")
register_fault("wrong_reduction_identity", "reduce_sum accumulators start at 1 instead of 0")
register_fault("missing_barrier", "no barrier between the partials' shared stores and loads")
register_fault("f16_accumulation", "16-bit floats accumulate in their storage dtype, not f32")
register_fault("swapped_transpose", "transpose reads with the inverse permutation")
register_fault("bf16_truncation", "bf16 stores round toward zero instead of to nearest even")
register_fault("wrong_broadcast_axis", "broadcast_to reads its source along the wrong axis")
register_fault("dropped_epilogue", "matmul epilogue skips the last elementwise op")
# matrix-unit kernels (hal.lowering.matmul_mma)
register_fault("mma_swapped_fragment_halves",
               "matrix-unit A fragments load their two k halves swapped")
register_fault("mma_wrong_k_order",
               "matrix-unit B fragments read the k steps of a tile in reverse order")
register_fault("missing_cp_async_wait",
               "a pipeline stage is read without its wait (cp.async.wait_group, or the "
               "barrier after a register-prefetched stage is stored)")
register_fault("wrong_swizzle",
               "fragment loads read the shared tiles with the unpadded row stride")

_active: set[str] = set()


def active(name: str) -> bool:
    """Whether fault `name` is planted now (cheap: a set lookup and an env read)."""
    return name in _active or os.environ.get(ENV_VAR) == name


@contextmanager
def planted(name: str) -> Iterator[None]:
    """Plant fault `name` for the duration of the block (and in child processes via env)."""
    if name not in FAULTS:
        raise HalError(f"unknown fault '{name}'", hint="known: " + ", ".join(FAULTS))
    old = os.environ.get(ENV_VAR)
    _active.add(name)
    os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        _active.discard(name)
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def truncate_bf16(e):
    """`e` nudged toward zero by just under half a bf16 ulp: RNE of it is truncation."""
    from hal.kernel.ir import Binary, Const, Unary

    c = e.dtype
    mag = Unary("exp2", Binary("sub", Unary("floor", Unary("log2", Unary("abs", e))),
                               Const(7.0, c)))
    return Binary("sub", e, Binary("mul", Unary("sign", e), Binary("mul", mag, Const(0.4999, c))))
