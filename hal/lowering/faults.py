"""Planted lowering faults for the conformance self-test (`hal conformance --self-test`).

Each fault is a named, deliberate bug that a hook inside hal.lowering switches
on (`if ctx.options.fault("missing_barrier"): ...`), one to three lines at the
exact place the real bug would live. The conformance suite must catch every
one of them, by a numeric mismatch or by a simulator check (race,
out_of_bounds). A fault is planted only through the frozen
`hal.lowering.options.LoweringOptions` a lowering runs under
(`LoweringOptions.planting(name)`); there is no module state and no
environment variable. `register_fault` is the extension point.
"""

from __future__ import annotations

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


def truncate_bf16(e):
    """`e` nudged toward zero by just under half a bf16 ulp: RNE of it is truncation."""
    from hal.kernel.ir import Binary, Const, Unary

    c = e.dtype
    mag = Unary("exp2", Binary("sub", Unary("floor", Unary("log2", Unary("abs", e))),
                               Const(7.0, c)))
    return Binary("sub", e, Binary("mul", Unary("sign", e), Binary("mul", mag, Const(0.4999, c))))
