"""Group kind -> lowering function: the one dispatch point from FusedGroup to kernels.

    @register_lowering("pointwise")
    def lower_pointwise(group, spec) -> list[Kernel]: ...

`lower_group(group, spec)` looks the group's kind up here. A new kind (or a
better lowering of an existing one) is one registration; nothing else in hal
switches on group kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from hal.devices.spec import DeviceSpec
from hal.errors import UnsupportedError
from hal.kernel.ir import Kernel

Lowering = Callable[..., list[Kernel]]

LOWERINGS: dict[str, Lowering] = {}


def register_lowering(kind: str) -> Callable[[Lowering], Lowering]:
    """Register the lowering of fused groups of `kind` (replaces an earlier one)."""
    def deco(fn: Lowering) -> Lowering:
        LOWERINGS[kind] = fn
        return fn

    return deco


def lower_group(group, spec: DeviceSpec) -> list[Kernel]:
    """Lower one FusedGroup to its kernels (usually one; split reductions give two)."""
    from hal.lowering import _load_all

    _load_all()
    fn = LOWERINGS.get(group.kind)
    if fn is None:
        raise UnsupportedError(f"group {group.name}: no lowering for kind '{group.kind}'",
                               hint="known kinds: " + ", ".join(sorted(LOWERINGS)))
    return fn(group, spec)
