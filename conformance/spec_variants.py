"""Spec variants conformance cases may run on (`Case.variant`): transforms DeviceSpec ->
DeviceSpec of the device under test, so the schedules and refusals a device unlike the
shipped ones gets (few units, a small L2, limited grid axes, 64-bit indices, little shared
memory, the other warp width, few registers, TF32 granted, no TMA, no clusters) run on the suite's
small shapes, with the device's own code paths otherwise."""

from __future__ import annotations

from collections.abc import Callable


def _small(spec):
    """Two compute units and a 64 KiB L2 (same lanes, shared memory, registers): the
    schedules a big device uses on big tensors run on the suite's small shapes."""
    import dataclasses

    return dataclasses.replace(spec, name=f"{spec.name}+small", compute_units=2,
                               l2_bytes=min(spec.l2_bytes, 64 * 1024))


def _folded(spec):
    """Grid axes y and z limited to 3 and 2 blocks: batched and multi-head kernels exceed
    them on small shapes and run with their grid folded into x (hal.lowering.grid_limits),
    as a batch of 70,000 would on a real device's 65,535."""
    import dataclasses

    return dataclasses.replace(spec, name=f"{spec.name}+folded",
                               max_grid=(spec.max_grid[0], 3, 2))


def _wide_index(spec):
    """64-bit index arithmetic (a spec's `index_bits: 64`), which a tensor of 2^31 elements
    would otherwise need to reach."""
    import dataclasses

    return dataclasses.replace(spec, name=f"{spec.name}+i64", index_bits=64)


def _shared(kib: int):
    def variant(spec):
        """`kib` KiB of shared memory per block (and at most 64 KiB per unit): tiles that fit
        the shipped devices do not, so the planner's smaller tiles and refusals run."""
        import dataclasses

        return dataclasses.replace(spec, name=f"{spec.name}+smem{kib}k",
                                   shared_mem_per_block=kib * 1024,
                                   shared_mem_per_unit=max(kib * 1024, 64 * 1024))
    return variant


def _other_warp(spec):
    """The other warp width (32 <-> 64 lanes; 32 for any other width, e.g. scratch-npu's
    16): the spec's matrix instructions are issued by warps of their own width, so this
    device runs its GEMMs and attention without them."""
    import dataclasses

    other = 64 if spec.warp_size == 32 else 32
    return dataclasses.replace(spec, name=f"{spec.name}+w{other}", warp_size=other)


def _few_registers(spec):
    """24 registers per thread and 8,192 per unit (a small core): a matmul with a long fused
    epilogue finds no SIMT tile and the planner keeps the epilogue out of its kernel."""
    import dataclasses

    return dataclasses.replace(spec, name=f"{spec.name}+regs24", max_registers_per_thread=24,
                               registers_per_unit=8192)


def _capability(name: str, grant: bool):
    def variant(spec):
        """The spec with capability `name` granted (TF32: f32 contractions may run on the
        matrix unit) or withdrawn (TMA: Hopper GEMMs without wgmma)."""
        import dataclasses

        caps = spec.capabilities | {name} if grant else spec.capabilities - {name}
        return dataclasses.replace(spec, name=f"{spec.name}{'+' if grant else '-'}{name}",
                                   capabilities=frozenset(caps))
    return variant


SPEC_VARIANTS: dict[str, Callable] = {
    "small": _small, "folded": _folded, "wide_index": _wide_index,
    "smem2k": _shared(2), "smem12k": _shared(12), "other_warp": _other_warp,
    "few_registers": _few_registers,
    "tf32": _capability("allow_tf32", True), "no_tma": _capability("tma", False),
    "no_clusters": _capability("clusters", False)}


def register_spec_variant(name: str, fn: Callable) -> None:
    """A named transform DeviceSpec -> DeviceSpec that cases may run on (`Case.variant`)."""
    SPEC_VARIANTS[name] = fn


def case_spec(case, spec):
    """The spec `case` runs on: the device's own, or its variant."""
    return SPEC_VARIANTS[case.variant](spec) if case.variant else spec
