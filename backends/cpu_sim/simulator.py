"""simulate(): run one kernel IR launch on the CPU, lane-vectorised, exactly as a GPU would.

The kernel is verified and translated once into Python over lane arrays (codegen),
cached by its structure, then run wave by wave: a wave is as many whole blocks as
fit in `max_lanes` lanes (lanes.Wave). Global buffers are the caller's 1-D NumPy
arrays, changed in place. Launch limits are enforced before anything runs;
with check=True, out-of-bounds accesses, shared-memory races, i32 index
overflow, divergent barriers and bad shuffles raise SimulationError (checks.py).
Counters and the roofline model are in stats.py.

Numerics (the definition the CUDA/HIP renderers must match): see codegen's
docstring; in short, f32 math is float32, narrow floats compute in float32 and
round after every op, every store and cast rounds with hal.dtypes.cast, and
integer index math wraps in the kernel's index dtype.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from hal.devices.spec import DeviceSpec
from hal.errors import DeviceError
from hal.kernel.ir import Kernel

from .checks import SimulationError, check_launch
from .codegen import CompiledKernel, compile_kernel, param_value
from .lanes import Wave
from .stats import KernelStats

_CACHE: OrderedDict[str, CompiledKernel] = OrderedDict()
_CACHE_SIZE = 128


def _structure_key(k: Kernel) -> str:
    # Everything the generated code depends on (meta is not; grid and block bound the
    # index ranges whose i32 checks codegen leaves out, ranges.py).
    return repr((k.name, k.params, k.body, k.shared, k.locals, k.index_dtype, k.warp_size,
                 tuple(k.grid), k.block, tuple(k.cluster)))


def compiled(kernel: Kernel, options=None) -> CompiledKernel:
    """The verified, translated kernel, from the cache when the same structure was seen."""
    key = _structure_key(kernel) + repr(sorted(options.faults) if options else [])
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    from hal.kernel.verify import verify_kernel

    verify_kernel(kernel, strict_barriers=False)  # barriers are checked at run time
    ck = compile_kernel(kernel, options)
    _CACHE[key] = ck
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ck


def _bind_args(kernel: Kernel, ck: CompiledKernel, args: dict[str, Any]):
    missing = [p.name for p in (*ck.globals_, *ck.scalars) if p.name not in args]
    if missing:
        raise DeviceError(f"kernel {kernel.name}: missing argument(s) {', '.join(missing)}",
                          hint="pass every buffer and scalar parameter by name")
    buffers = []
    for p in ck.globals_:
        a = args[p.name]
        if not isinstance(a, np.ndarray):
            raise DeviceError(f"kernel {kernel.name}: argument '{p.name}' must be a NumPy array "
                              f"of {p.dtype}, got {type(a).__name__}")
        if a.dtype != p.dtype.np_dtype or a.size != p.numel:
            raise DeviceError(
                f"kernel {kernel.name}: argument '{p.name}' is {a.dtype}[{a.size}], "
                f"the kernel expects {p.dtype}[{p.numel}]",
                hint=f"pass a contiguous array of {p.numel} {p.dtype.np_dtype} elements")
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise DeviceError(f"kernel {kernel.name}: argument '{p.name}' must be a contiguous, "
                              "writeable array", hint="pass np.ascontiguousarray(x)")
        buffers.append((p, a.reshape(-1)))
    scalars = {p.name: param_value(args[p.name], p.dtype) for p in ck.scalars}
    return buffers, scalars


def simulate(kernel: Kernel, args: dict[str, np.ndarray | int | float], spec: DeviceSpec, *,
             check: bool = True, max_lanes: int = 1 << 18,
             exact_rounding: bool = False, blocks: np.ndarray | None = None,
             written: list | None = None,
             progress: Callable[[int, int], None] | None = None,
             options=None) -> KernelStats:
    """Run `kernel` once on the grid it names, for the device `spec`; return its counters.

    Global buffer args are modified in place. `blocks` runs only those linear block ids
    (sampled simulation); `written` (one list per global buffer) collects the indices
    stores hit; `progress(blocks_done, blocks_total)` is called before each wave. A wave holds as many whole blocks as fit in
    `max_lanes` lanes (at least one block); 2^18 keeps lane arrays cache-sized and the
    extra memory near 3x a 64 MiB tensor while Python overhead stays small. Raises SimulationError for launches
    the device would refuse (always) and for faults (with check=True).
    """
    t0 = time.perf_counter()
    check_launch(kernel, spec)
    ck = compiled(kernel, options)   # options: planted self-test faults (cpu_sim/faults.py)
    buffers, scalars = _bind_args(kernel, ck, args)
    T, nb = kernel.block, kernel.num_blocks
    unit = _cluster_unit(kernel)
    if blocks is not None:  # a subset of the grid (sampled.py): counters cover only these
        blocks = np.asarray(blocks, np.int64)
        if unit > 1:        # whole clusters: a CTA's peers run with it (cluster_sim)
            blocks = np.unique(blocks - blocks % unit)[:, None] + np.arange(unit)
            blocks = blocks.ravel()
        nb = int(blocks.size)
    per_wave = max(1, min(nb, max_lanes // T))
    per_wave = max(unit, per_wave - per_wave % unit)
    grid = tuple(int(g) for g in kernel.grid)
    stats = KernelStats(kernel.name, grid, T, kernel.shared_bytes,  # type: ignore[arg-type]
                        lanes_per_wave=per_wave * T)
    flops = [0] * len(ck.flop_dtypes)
    groups: dict = {}
    with np.errstate(all="ignore"):
        for b0 in range(0, nb, per_wave):
            if progress is not None:
                progress(b0, nb)
            n = min(per_wave, nb - b0)
            w = Wave(kernel.name, grid, T, b0, n, kernel.warp_size,  # type: ignore[arg-type]
                     buffers, ck.shared, ck.locals_, ck.sites, len(ck.flop_dtypes), check,
                     fast=not exact_rounding, reduction_groups=groups,
                     block_ids=None if blocks is None else blocks[b0:b0 + n],
                     written=written)
            ck.run(w, scalars)
            stats.global_bytes_read += w.gr
            stats.global_bytes_written += w.gw
            stats.shared_bytes_read += w.sr
            stats.shared_bytes_written += w.sw
            stats.barriers += w.barriers
            stats.atomics += w.atomics
            stats.waves += 1
            stats.bank_conflicts += w.bank_conflicts
            for lay, n in w.mfl.items():
                stats.matrix_flops[lay] = stats.matrix_flops.get(lay, 0) + n
            flops = [a + b for a, b in zip(flops, w.fl, strict=False)]
    stats.flops_by_dtype = dict(zip(ck.flop_dtypes, (int(f) for f in flops), strict=False))
    stats.finish(spec)
    stats.wall_s = time.perf_counter() - t0
    return stats


def _cluster_unit(kernel: Kernel) -> int:
    """Blocks per run of consecutive linear block ids that holds whole clusters (the
    verifier made each grid axis a multiple of the cluster's)."""
    cx, cy, cz = kernel.cluster
    gx, gy, _gz = kernel.grid
    if cx * cy * cz == 1:
        return 1
    if cy == cz == 1:
        return cx
    return gx * cy if cz == 1 else gx * gy * cz


def kernel_source(kernel: Kernel) -> str:
    """The Python the simulator generated for `kernel` (for debugging)."""
    return compiled(kernel).source


__all__ = ["simulate", "KernelStats", "SimulationError", "kernel_source", "compiled"]
