"""fusion.cost.price keeps roofline seconds in ROOFLINE_TIMES by (spec, DRAM bytes, flops by
instruction, blocks): a plan differing from a memoised one in any of these is priced
afresh, and a repeat is served the same seconds."""

from __future__ import annotations

from dataclasses import replace

from hal.devices.loader import load_spec
from hal.fusion.cost import ROOFLINE_TIMES, price
from hal.lowering import memo
from hal.lowering.plan import GroupKind, KernelPlan, Launch, MathInstruction, MathKind


def _pairs() -> list[tuple[KernelPlan, KernelPlan]]:
    """(plan, the plan with one key part changed) where the change shows in the time: bytes
    and blocks on a memory-bound plan, flops, instruction and blocks on a compute-bound one."""
    mem = KernelPlan(group="g", kind=GroupKind.POINTWISE, strategy="thread_per_element",
                     launches=(Launch("g", (8, 1, 1), 128),), written_bytes=1 << 20,
                     flops=1e6, blocks=8)
    comp = replace(mem, written_bytes=4096, flops=1e12)
    mma = MathInstruction(MathKind.MATRIX, "bf16", None)
    return [(mem, replace(mem, written_bytes=(1 << 20) + 4096)),
            (mem, replace(mem, scratch_bytes=8192)),
            (mem, replace(mem, blocks=1000)),
            (comp, replace(comp, flops=3e12)),
            (comp, replace(comp, blocks=1000)),
            (comp, replace(comp, math=mma)),
            (comp, replace(comp, math_flops=((mma, 1e12), (MathInstruction(), 5e11))))]


def test_memoised_prices_equal_fresh_ones():
    for spec in (load_spec("h100-sxm"), load_spec("mi300x")):
        for plan, changed in _pairs():
            with memo.disabled():
                fresh = price(plan, spec).time_s, price(changed, spec).time_s
            assert fresh[0] != fresh[1]
            ROOFLINE_TIMES.clear()
            first = price(plan, spec).time_s                 # fills the memo
            assert (first, price(changed, spec).time_s) == fresh   # must not be served it
            assert price(plan, spec).time_s == fresh[0] and ROOFLINE_TIMES.info()["size"] == 2


def test_specs_never_share_a_price():
    plan = _pairs()[0][0]
    h100, mi300 = load_spec("h100-sxm"), load_spec("mi300x")
    with memo.disabled():
        fresh = price(plan, h100).time_s, price(plan, mi300).time_s
    assert fresh[0] != fresh[1]
    ROOFLINE_TIMES.clear()
    assert (price(plan, h100).time_s, price(plan, mi300).time_s) == fresh
