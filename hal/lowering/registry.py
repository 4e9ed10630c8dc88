"""Group kind -> lowering function: the one dispatch point from FusedGroup to kernels.

    @register_lowering("pointwise")
    def lower_pointwise(group, spec, options) -> list[Kernel]: ...

`lower_group(group, spec, options)` looks the group's kind up here. A new kind (or a
better lowering of an existing one) is one registration; nothing else in hal
switches on group kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from hal.devices.spec import DeviceSpec
from hal.errors import UnsupportedError
from hal.kernel.ir import Kernel
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions

Lowering = Callable[..., list[Kernel]]

LOWERINGS: dict[str, Lowering] = {}


def register_lowering(kind: str) -> Callable[[Lowering], Lowering]:
    """Register the lowering of fused groups of `kind` (replaces an earlier one)."""
    def deco(fn: Lowering) -> Lowering:
        LOWERINGS[kind] = fn
        return fn

    return deco


def lower_group(group, spec: DeviceSpec,
                options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Lower one FusedGroup to its kernels (usually one; split reductions give two) under
    `options` (the self-test's planted faults; none by default)."""
    from hal.lowering import _load_all

    _load_all()
    fn = LOWERINGS.get(group.kind)
    if fn is None:
        raise UnsupportedError(f"group {group.name}: no lowering for kind '{group.kind}'",
                               hint="known kinds: " + ", ".join(sorted(LOWERINGS)))
    return fn(group, spec, options)
