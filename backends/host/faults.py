"""Planted RENDERER faults: bugs that live only in the rendered CUDA/HIP text.

cpu_sim executes the kernel IR, so it cannot see a wrong C spelling, a wrong shuffle width
or a dropped barrier in the text; the host backends (cuda-host, hip-host) execute the text
and must catch every fault here. Each fault is a renderer override of one method, the
exact place such a bug would live, applied by HostBackend.renderer() while the fault is
planted (`planted(name)`, or HAL_RENDER_FAULT=<name> so that worker processes inherit it).

`RENDER_FAULTS` (name -> description) and `register_render_fault` are the extension point;
`SELFTEST_CASES` names, per fault, conformance cases that must catch it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hal.errors import HalError
from hal.render.cstyle import CStyleRenderer

ENV_VAR = "HAL_RENDER_FAULT"

RENDER_FAULTS: dict[str, str] = {}
_OVERRIDES: dict[str, Callable[[type[CStyleRenderer]], type[CStyleRenderer]]] = {}
_active: set[str] = set()


def register_render_fault(name: str, description: str,
                          override: Callable[[type[CStyleRenderer]], type[CStyleRenderer]]
                          ) -> None:
    """Declare a fault: `override(renderer_class)` returns the faulty subclass."""
    RENDER_FAULTS[name] = description
    _OVERRIDES[name] = override


def active_fault() -> str | None:
    if _active:
        return next(iter(_active))
    name = os.environ.get(ENV_VAR)
    return name if name in RENDER_FAULTS else None


@contextmanager
def planted(name: str) -> Iterator[None]:
    """Plant renderer fault `name` for the block (and in child processes via the env)."""
    if name not in RENDER_FAULTS:
        raise HalError(f"unknown renderer fault '{name}'",
                       hint="known: " + ", ".join(RENDER_FAULTS))
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


def with_fault(renderer: CStyleRenderer) -> CStyleRenderer:
    """`renderer`, or its faulty variant while a renderer fault is planted."""
    name = active_fault()
    if name is None:
        return renderer
    return _OVERRIDES[name](type(renderer))()


# ------------------------------------------------------------------ the faults

def _exp_as_exp2(base: type[CStyleRenderer]) -> type[CStyleRenderer]:
    class Faulty(base):
        def _op(self, op, operand, result, args):
            return super()._op("exp2" if op == "exp" else op, operand, result, args)
    return Faulty


def _int_div_floor(base: type[CStyleRenderer]) -> type[CStyleRenderer]:
    class Faulty(base):  # integer division rounding toward -inf (Python's //), not C's
        def _op(self, op, operand, result, args):
            if op == "div" and operand.is_int and not operand.is_bool:
                a, b = args["a"], args["b"]
                return (f"(({b}) == 0 ? 0 : (({a}) / ({b}) - ((({a}) % ({b}) != 0) && "
                        f"((({a}) < 0) != (({b}) < 0)))))")
            return super()._op(op, operand, result, args)
    return Faulty


def _shuffle_width_32(base: type[CStyleRenderer]) -> type[CStyleRenderer]:
    class Faulty(base):  # a width of 32 written into the text whatever the wave is
        def _e_Shuffle(self, e):
            import dataclasses

            return super()._e_Shuffle(dataclasses.replace(e, width=min(e.width, 32)))
    return Faulty


def _dropped_syncthreads(base: type[CStyleRenderer]) -> type[CStyleRenderer]:
    class Faulty(base):
        def _s_Barrier(self, s, pad):
            return [pad + "// (barrier dropped)"]
    return Faulty


def _bf16_truncation(base: type[CStyleRenderer]) -> type[CStyleRenderer]:
    class Faulty(base):  # the round-toward-zero conversion each vendor offers
        low_float = {**base.low_float, "bf16": (
            base.low_float["bf16"][0],
            "__float2bfloat16_rz({x})" if base.vendor == "cuda"
            else "hip_bfloat16({x}, hip_bfloat16::truncate)")}
    return Faulty


register_render_fault("exp_as_exp2", "exp spelled exp2f/exp2 in the C op table", _exp_as_exp2)
register_render_fault("int_div_floor", "integer division rounds toward -inf instead of "
                      "truncating", _int_div_floor)
register_render_fault("shuffle_width_32", "shuffles written with width 32 on every target "
                      "(half a wave64 reduces)", _shuffle_width_32)
register_render_fault("dropped_syncthreads", "__syncthreads() dropped from the text",
                      _dropped_syncthreads)
register_render_fault("bf16_truncation", "f32 -> bf16 conversion truncates (rz) instead of "
                      "rounding to nearest even", _bf16_truncation)

# fault -> conformance cases that must catch it (cpu_sim passes all of them)
SELFTEST_CASES: dict[str, tuple[str, ...]] = {
    "exp_as_exp2": ("elementwise/exp/f32/31",),
    "int_div_floor": ("elementwise/div/i32/33x257",),
    "shuffle_width_32": ("reduction/reduce_sum/f32/4x1025/rows1025",),
    "dropped_syncthreads": ("reduction/reduce_sum/f32/4x1025/rows1025",),
    "bf16_truncation": ("cast/cast/f32-bf16/33x257",),
}

__all__ = ["ENV_VAR", "RENDER_FAULTS", "SELFTEST_CASES", "active_fault", "planted",
           "register_render_fault", "with_fault"]
