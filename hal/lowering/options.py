"""LoweringOptions: the frozen switches one lowering call runs under.

They carry the conformance self-test's planted faults (`hal.lowering.faults`)
and the reference variants tests compare a lowering against (`scalar_prologue`):
a lowering asks the options, never module state or the environment:

    options = LoweringOptions.planting("missing_barrier")
    kernels = lower_group(group, spec, options)          # the fault is planted
    ...
    if not ctx.options.fault("missing_barrier"):          # inside a lowering
        body.append(Barrier())

Adding a fault is two steps: `register_fault(name, description)` in
`hal.lowering.faults` (the extension point; unknown names are rejected here),
and one `options.fault(name)` check at the place the real bug would live.
The options reach every lowering through `lower_group(group, spec, options)`
and `KernelContext.options`; the conformance runner passes them to its
worker processes inside `SuiteConfig`, so no environment variable is involved.
Options are hashable (safe as part of a cache key).
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.errors import HalError


@dataclass(frozen=True)
class LoweringOptions:
    """`faults`: names of planted self-test faults (empty in production).

    `scalar_prologue`: the wgmma path rewrites a prologue-fused A tile element by element
    instead of in 16-byte chunks (hal.lowering.matmul_wgmma_prologue): the reference the
    chunk rewrite is tested bitwise against, and what `benchmarks/sass_wgmma_prologue.py
    --scalar` compiles. Being a field, it is part of every cache key the options are in
    (the lowering memo's among them)."""

    faults: frozenset[str] = frozenset()
    scalar_prologue: bool = False

    def __post_init__(self) -> None:
        from hal.lowering.faults import FAULTS

        object.__setattr__(self, "faults", frozenset(self.faults))
        unknown = sorted(self.faults - FAULTS.keys())
        if unknown:     # self-test hook: fault names are given only by the self-test's API
            raise HalError(f"unknown lowering fault(s): {', '.join(unknown)}",
                           hint="known: " + ", ".join(FAULTS)
                           + " (declare new ones with hal.lowering.faults.register_fault)")

    def fault(self, name: str) -> bool:
        """Whether the self-test fault `name` is planted in this lowering."""
        return name in self.faults

    @classmethod
    def planting(cls, *names: str) -> LoweringOptions:
        """Options with the faults `names` planted (and nothing else)."""
        return cls(faults=frozenset(names))


DEFAULT_OPTIONS = LoweringOptions()
