"""The simulator's errors and launch checks: `SimulationError` and `check_launch`.

Each check names what hardware would punish: the kernel, the buffer, the block and
thread, the index, and the fix. `kind` is one of SIMULATION_ERROR_KINDS so tests
and reports can tell faults apart without parsing messages.
"""

from __future__ import annotations

from hal.devices.spec import DeviceSpec
from hal.errors import DeviceError
from hal.kernel.ir import Kernel

SIMULATION_ERROR_KINDS = ("out_of_bounds", "race", "index_overflow", "launch_refused",
                          "divergent_barrier", "bad_shuffle", "divergent_mma", "bad_mma",
                          "misaligned", "unsupported", "deadlock", "bad_mbarrier")


class SimulationError(DeviceError):
    """A fault the CPU simulator found while (or before) running a kernel."""

    def __init__(self, kind: str, message: str, *, kernel: str, buffer: str | None = None,
                 block: tuple[int, int, int] | None = None, thread: int | None = None,
                 index: int | None = None, hint: str | None = None):
        assert kind in SIMULATION_ERROR_KINDS, kind
        self.kind, self.kernel, self.buffer = kind, kernel, buffer
        self.block, self.thread, self.index = block, thread, index
        super().__init__(f"{kind}: {message}", hint=hint)


def _kib(n: int) -> str:
    return f"{n / 1024:g} KiB"


def check_launch(kernel: Kernel, spec: DeviceSpec) -> None:
    """Refuse, before anything runs, a launch the device would refuse."""
    k = kernel
    if k.warp_size != spec.warp_size:
        raise SimulationError(
            "launch_refused",
            f"launch refused: kernel {k.name} was lowered for warp size {k.warp_size}, "
            f"{spec.name} has warp size {spec.warp_size}",
            kernel=k.name, hint=f"lower the group again for {spec.name}")
    if k.block > spec.max_threads_per_block or k.block < 1:
        raise SimulationError(
            "launch_refused",
            f"launch refused: kernel {k.name} uses {k.block} threads per block, "
            f"{spec.name} allows 1..{spec.max_threads_per_block}",
            kernel=k.name, hint="lower with a smaller block")
    if k.shared_bytes > spec.shared_mem_per_block:
        raise SimulationError(
            "launch_refused",
            f"launch refused: kernel {k.name} needs {_kib(k.shared_bytes)} shared memory, "
            f"{spec.name} allows {_kib(spec.shared_mem_per_block)} per block",
            kernel=k.name, hint="lower with smaller tiles")
    over = [f"{a}={g} (limit {m})" for a, g, m in zip("xyz", k.grid, spec.max_grid,
                                                       strict=True) if g > m]
    if over:
        raise SimulationError(
            "launch_refused",
            f"launch refused: kernel {k.name} has grid {tuple(k.grid)}; {spec.name} allows at "
            f"most {tuple(spec.max_grid)} blocks per axis: " + ", ".join(over),
            kernel=k.name, hint="lower the group again (hal.lowering folds long grid axes "
                                "into x)")
    if min(k.grid) < 1:
        raise SimulationError("launch_refused",
                              f"launch refused: kernel {k.name} has an empty grid {k.grid}",
                              kernel=k.name)
