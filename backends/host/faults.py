"""Planted RENDERER faults: bugs that live only in the rendered CUDA/HIP text.

cpu_sim executes the kernel IR, so it cannot see a wrong C spelling, a wrong shuffle width
or a dropped barrier in the text; the host backends (cuda-host, hip-host) execute the text
and must catch every fault here. Each fault is a renderer override of one method, the
exact place such a bug would live. A fault is planted by registering a separate backend,
`plant("cuda-host", "exp_as_exp2")` -> "cuda-host+exp_as_exp2", whose renderer is the
faulty one: no switch inside the production path, and conformance (`execute`, the suite,
worker processes) runs it like any backend.

`RENDER_FAULTS` (name -> description) and `register_render_fault` are the extension point;
`SELFTEST_CASES` names, per fault, conformance cases that must catch it, and
`run_render_selftest` runs them (`python -m hal.backends.host.faults --backend hip-host
--device mi300x`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from hal.backends_registry import backend_names, get_backend, register_backend
from hal.errors import HalError
from hal.render.cstyle import CStyleRenderer

RENDER_FAULTS: dict[str, str] = {}
_OVERRIDES: dict[str, Callable[[type[CStyleRenderer]], type[CStyleRenderer]]] = {}


def register_render_fault(name: str, description: str,
                          override: Callable[[type[CStyleRenderer]], type[CStyleRenderer]]
                          ) -> None:
    """Declare a fault: `override(renderer_class)` returns the faulty subclass."""
    RENDER_FAULTS[name] = description
    _OVERRIDES[name] = override


def plant(backend: str, fault: str) -> str:
    """The name of a backend that is `backend` with renderer fault `fault` (registered once)."""
    if fault not in RENDER_FAULTS:
        raise HalError(f"unknown renderer fault '{fault}'",
                       hint="known: " + ", ".join(RENDER_FAULTS))
    name = f"{backend}+{fault}"
    if name not in backend_names():
        base = type(get_backend(backend))
        override = _OVERRIDES[fault]

        def renderer(self) -> CStyleRenderer:
            return override(type(base.renderer(self)))()

        register_backend(name, type(f"Faulty{base.__name__}", (base,),
                                    {"name": name, "renderer": renderer}),
                         origin=f"{base.__module__}:{base.__name__} + fault {fault}")
    return name


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



# faults that change nothing on a 32-lane warp (the text is right there by accident)
WIDE_WAVE_ONLY = frozenset({"shuffle_width_32"})


def run_render_selftest(backend: str, device: str) -> dict[str, list[tuple[str, str]]]:
    """fault -> [(case id, verdict)] of the SELFTEST_CASES that caught it (empty: escaped).
    The cases must pass on `backend` without a fault first. Faults in WIDE_WAVE_ONLY are
    left out on devices of 32 lanes or fewer."""
    from hal.conformance.cases import get_case
    from hal.conformance.runner import execute
    from hal.devices.loader import load_spec

    wide = load_spec(device).warp_size > 32

    cases = sorted({c for cs in SELFTEST_CASES.values() for c in cs})
    base = {c: execute(get_case(c), backend, device, unfused=False, profile=False)["verdict"]
            for c in cases}
    bad = {c: v for c, v in base.items() if v != "pass"}
    if bad:
        raise HalError(f"self-test cases fail on {backend} without a fault: {bad}")
    out: dict[str, list[tuple[str, str]]] = {}
    for fault, ids in SELFTEST_CASES.items():
        if fault in WIDE_WAVE_ONLY and not wide:
            continue
        faulty = plant(backend, fault)
        out[fault] = []
        for c in ids:
            r = execute(get_case(c), faulty, device, unfused=False, profile=False)
            if r["verdict"] in ("fail", "error"):
                out[fault].append((c, r["verdict"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="planted renderer faults on a host backend")
    ap.add_argument("--backend", default="cuda-host")
    ap.add_argument("--device", default="h100-sxm")
    args = ap.parse_args(argv)
    res = run_render_selftest(args.backend, args.device)
    for fault, caught in res.items():
        print(f"{fault:22s} {'caught by ' + ', '.join(c for c, _ in caught) if caught else 'ESCAPED'}"
              f"  ({RENDER_FAULTS[fault]})")
    return 0 if all(res.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["RENDER_FAULTS", "SELFTEST_CASES", "WIDE_WAVE_ONLY", "plant",
           "register_render_fault", "run_render_selftest"]
