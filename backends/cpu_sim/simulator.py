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

import pickle
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
from .parallel import SharedOutputs, run_waves, sim_jobs
from .sampled import cluster_unit, has_global_atomics
from .stats import KernelStats
from .tally import per_part

_CACHE: OrderedDict[tuple[bytes | str, str], CompiledKernel] = OrderedDict()
_CACHE_SIZE = 1024


def _structure_key(k: Kernel) -> bytes | str:
    # Everything the generated code depends on (meta is not; grid and block bound the
    # index ranges whose i32 checks codegen leaves out, ranges.py). Not the name: messages
    # take it from the launch, so a fused run's k0_exp and an unfused run's g0_exp of the
    # same body share one translation. Pickled rather than repr'd: the pickler walks the
    # nodes in C (the dataclasses' reprs are a Python call per node), and its bytes are
    # the whole state, so equal bytes are an equal structure (-0.0, 1 and 1.0 and True
    # apart, as in the repr). Structures that pickle differently but are equal (nodes
    # shared in one, copied in the other) only miss the cache.
    parts = (k.params, k.body, k.shared, k.locals, k.index_dtype, k.warp_size,
             tuple(k.grid), k.block, tuple(k.cluster), tuple(k.tensor_maps))
    try:
        return pickle.dumps(parts, 5)
    except (pickle.PicklingError, TypeError, AttributeError):   # an unpicklable value
        return repr(parts)


def compiled(kernel: Kernel, options=None) -> CompiledKernel:
    """The verified, translated kernel, from the cache when the same structure was seen."""
    key = (_structure_key(kernel), repr(sorted(options.faults) if options else []))
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


# A launch (or one block set) of at least MIN_WAVES blocks runs in at least MIN_WAVES
# waves of equal size (to one block), whatever the number of worker processes: waves are
# what workers share out, and a fixed partition keeps outputs, counters and the reported
# fault the same for every --jobs (the first fault is the first in wave order, then in
# program order). Several block sets (a sampled launch) are waves enough: one or more each;
# combined (simulate_parts(combine=True)), as few as max_lanes allows.
# A launch under SPLIT_LANES lanes stays one wave: splitting it would multiply the
# per-wave Python overhead that dominates small kernels (the conformance suite's).
MIN_WAVES = 4
SPLIT_LANES = 1 << 14


def plan_waves(nb: int, block: int, max_lanes: int, min_waves: int = MIN_WAVES,
               unit: int = 1) -> list[tuple[int, int]]:
    """(first block, blocks) of each wave of a launch of `nb` blocks of `block` threads;
    every wave holds whole runs of `unit` blocks (a thread-block cluster's CTAs run in one
    wave: sampled.cluster_unit), so `nb` is a multiple of `unit`."""
    if nb == 0:
        return []
    nu = nb // unit
    per_wave = max(1, min(nu, max_lanes // (block * unit)))
    if nb * block < SPLIT_LANES:
        min_waves = 1
    n = max(-(-nu // per_wave), min(min_waves, nu))
    size, extra = divmod(nu, n)
    out, b0 = [], 0
    for i in range(n):
        c = (size + (i < extra)) * unit
        out.append((b0, c))
        b0 += c
    return out


def x_major_order(grid: tuple[int, int, int]) -> np.ndarray | None:
    """The linear block ids of a 2-d or 3-d grid ordered by blockIdx.x first, or None
    (a 1-d grid: linear order already). A launch in several waves then puts blocks of
    one blockIdx.x (causal attention's row tile, over every head) in one wave, and a
    loop whose trip count follows blockIdx.x runs about as many iterations per wave as
    its blocks need instead of the launch's maximum. The partition is fixed for every
    --jobs, so outputs, counters and the first fault stay the same whatever the jobs."""
    gx, gy, gz = grid
    if gx == 1 or gy * gz == 1:
        return None
    return (np.arange(gx, dtype=np.int64)[:, None]
            + gx * np.arange(gy * gz, dtype=np.int64)[None, :]).reshape(-1)


def _whole_clusters(parts: list[np.ndarray | None], unit: int) -> list[np.ndarray | None]:
    """Block sets widened to whole clusters of `unit` consecutive ids; a cluster already in
    an earlier part is left out of the later ones (each block runs once)."""
    out: list[np.ndarray | None] = []
    seen = np.zeros(0, np.int64)
    for ids in parts:
        if ids is None:
            out.append(None)
            continue
        first = np.unique(np.asarray(ids, np.int64) // unit * unit)
        first = first[~np.isin(first, seen)]
        seen = np.concatenate([seen, first])
        out.append((first[:, None] + np.arange(unit)).ravel())
    return out


def simulate(kernel: Kernel, args: dict[str, np.ndarray | int | float], spec: DeviceSpec, *,
             check: bool = True, max_lanes: int = 1 << 18,
             exact_rounding: bool = False, blocks: np.ndarray | None = None,
             written: list | None = None,
             progress: Callable[[int, int], None] | None = None,
             options=None, jobs: int | None = None, model: bool = True) -> KernelStats:
    """Run `kernel` once on the grid it names, for the device `spec`; return its counters.

    Global buffer args are modified in place. `blocks` runs only those linear block ids
    (sampled simulation); `written` (one list per global buffer) collects the indices
    stores hit; `progress(blocks_done, blocks_total)` is called before the first wave and
    as waves finish. A wave holds as many whole blocks as fit in `max_lanes` lanes (at
    least one block; plan_waves); 2^18 keeps lane arrays cache-sized and the
    extra memory near 3x a 64 MiB tensor while Python overhead stays small. `jobs`
    worker processes share the waves out (parallel.py; default sim_jobs()). Raises
    SimulationError for launches the device would refuse (always) and for faults
    (with check=True). `model=False` leaves the stats' modelled_time_s and flops total at
    0 (stats.finish, the roofline: ~0.1 ms a launch) for a caller that reads only the
    outputs (cpu_sim's run_graph with kernel_stats=False: the conformance suite).
    """
    parts = [None] if blocks is None else [np.asarray(blocks, np.int64)]
    return simulate_parts(kernel, args, spec, parts, check=check, max_lanes=max_lanes,
                          exact_rounding=exact_rounding, written=written, progress=progress,
                          options=options, jobs=jobs, model=model)[0]


def simulate_parts(kernel: Kernel, args: dict[str, np.ndarray | int | float],
                   spec: DeviceSpec, parts: list[np.ndarray | None], *,
                   check: bool = True, max_lanes: int = 1 << 18,
                   exact_rounding: bool = False, written: list | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   options=None, jobs: int | None = None,
                   combine: bool = False, model: bool = True) -> list[KernelStats]:
    """`simulate` of several block sets of one launch (None: the whole grid), all waves
    shared out among the same workers; one KernelStats per part, counted as if each
    part had been simulated on its own, in order (sampled.py's boundary and strata).

    combine=True (disjoint block id sets): the parts' blocks run together, in launch
    order, in as few waves as a launch of that many blocks (one when they fit in
    `max_lanes`), each lane count split per part (tally.py); the statement stream and
    its Python overhead run once instead of once per part. The values, checks and the
    per-part counters are the same as with separate waves; which fault is reported first
    when several blocks fail can differ (program order comes before part order)."""
    if combine and len(parts) > 1 and all(p is not None for p in parts):
        return _simulate_combined(kernel, args, spec, parts, check=check, max_lanes=max_lanes,
                                  exact_rounding=exact_rounding, written=written,
                                  progress=progress, options=options, jobs=jobs)
    t0 = time.perf_counter()
    check_launch(kernel, spec)
    ck = compiled(kernel, options)   # options: planted self-test faults (cpu_sim/faults.py)
    buffers, scalars = _bind_args(kernel, ck, args)
    T = kernel.block
    unit = cluster_unit(kernel)
    if unit > 1:     # whole clusters: a CTA's peers run with it (cluster_sim), once
        parts = _whole_clusters(parts, unit)
    grid = tuple(int(g) for g in kernel.grid)
    waves: list[tuple[int, int, int, np.ndarray | None]] = []   # (part, b0, n, block ids)
    stats_out = []
    for j, ids in enumerate(parts):
        nb = kernel.num_blocks if ids is None else int(ids.size)
        plan = plan_waves(nb, T, max_lanes, MIN_WAVES if len(parts) == 1 else 1, unit)
        if ids is None and unit == 1 and len(plan) > 1:
            ids = x_major_order(grid)
        for b0, n in plan:
            waves.append((j, b0, n, None if ids is None else ids[b0:b0 + n]))
        stats_out.append(KernelStats(kernel.name, grid, T, kernel.shared_bytes,  # type: ignore[arg-type]
                                     lanes_per_wave=(plan[0][1] if plan else 0) * T))
    total = sum(w[2] for w in waves)
    groups: dict = {}

    def run_wave(i: int, bufs=buffers, wr=written) -> dict:
        _, b0, n, ids = waves[i]
        w = Wave(kernel.name, grid, T, b0, n, kernel.warp_size,  # type: ignore[arg-type]
                 bufs, ck.shared, ck.locals_, ck.sites, len(ck.flop_dtypes), check,
                 fast=not exact_rounding, reduction_groups=groups, block_ids=ids, written=wr)
        with np.errstate(all="ignore"):
            ck.run(w, scalars)
        return {"global_bytes_read": w.gr, "global_bytes_written": w.gw,
                "shared_bytes_read": w.sr, "shared_bytes_written": w.sw,
                "barriers": w.barriers, "atomics": w.atomics,
                "bank_conflicts": w.bank_conflicts, "mfl": dict(w.mfl), "fl": list(w.fl)}

    nj = sim_jobs(jobs)
    if nj > 1 and len(waves) > 1 and not has_global_atomics(kernel):
        results = _run_parallel(kernel, buffers, waves, run_wave, written, nj, progress, total)
    else:
        results = []
        done = 0
        for i in range(len(waves)):
            if progress is not None:
                progress(done, total)
            results.append(run_wave(i))
            done += waves[i][2]
    flops = [[0] * len(ck.flop_dtypes) for _ in parts]
    for (j, *_), r in zip(waves, results, strict=True):
        st = stats_out[j]
        for c in ("global_bytes_read", "global_bytes_written", "shared_bytes_read",
                  "shared_bytes_written", "barriers", "atomics", "bank_conflicts"):
            setattr(st, c, getattr(st, c) + r[c])
        st.waves += 1
        for lay, n in r["mfl"].items():
            st.matrix_flops[lay] = st.matrix_flops.get(lay, 0) + n
        flops[j] = [a + b for a, b in zip(flops[j], r["fl"], strict=False)]
    wall = time.perf_counter() - t0
    for st, fl in zip(stats_out, flops, strict=True):
        st.flops_by_dtype = dict(zip(ck.flop_dtypes, (int(f) for f in fl), strict=False))
        if model:
            st.finish(spec)
        st.wall_s = wall / len(parts)
    return stats_out


def _simulate_combined(kernel: Kernel, args, spec: DeviceSpec, parts: list, *, check: bool,
                       max_lanes: int, exact_rounding: bool, written, progress, options,
                       jobs) -> list[KernelStats]:
    """simulate_parts(combine=True): one launch over the union of the parts' blocks."""
    t0 = time.perf_counter()
    check_launch(kernel, spec)
    ck = compiled(kernel, options)
    buffers, scalars = _bind_args(kernel, ck, args)
    T = kernel.block
    unit = cluster_unit(kernel)
    if unit > 1:
        parts = _whole_clusters(parts, unit)
    ids = np.concatenate([np.asarray(p, np.int64) for p in parts])
    label = np.concatenate([np.full(len(p), j, np.int64) for j, p in enumerate(parts)])
    if np.unique(ids).size != ids.size:
        raise ValueError("simulate_parts(combine=True): a block is in more than one part")
    order = np.argsort(ids, kind="stable")
    ids, label = ids[order], label[order]
    P = len(parts)
    grid = tuple(int(g) for g in kernel.grid)
    # one wave up to max_lanes: a sampled launch's few blocks are what one child
    # simulates (the children of several kernels share the CPUs), and each further wave
    # repeats the statement stream (the gate/up projection's 38 blocks: ~7% less CPU in
    # one wave than in four, ~200 MB more)
    plan = plan_waves(int(ids.size), T, max_lanes, 1, unit)
    counters = ("global_bytes_read", "global_bytes_written", "shared_bytes_read",
                "shared_bytes_written", "barriers", "atomics")
    attrs = ("gr", "gw", "sr", "sw", "barriers", "atomics")
    groups: dict = {}

    def run_wave(i: int, bufs=buffers, wr=written) -> dict:
        b0, n = plan[i]
        w = Wave(kernel.name, grid, T, b0, n, kernel.warp_size,  # type: ignore[arg-type]
                 bufs, ck.shared, ck.locals_, ck.sites, len(ck.flop_dtypes), check,
                 fast=not exact_rounding, reduction_groups=groups,
                 block_ids=ids[b0:b0 + n], written=wr, parts=(label[b0:b0 + n], P))
        with np.errstate(all="ignore"):
            ck.run(w, scalars)
        out = {c: per_part(getattr(w, a), P, c) for c, a in zip(counters, attrs, strict=True)}
        out["mfl"] = {lay: per_part(v, P, f"matrix flops {lay}") for lay, v in w.mfl.items()}
        out["fl"] = [per_part(v, P, f"flops {d}") for v, d in zip(w.fl, ck.flop_dtypes,
                                                                 strict=False)]
        out["bank_conflicts"] = int(w.bank_conflicts)
        return out

    nj = sim_jobs(jobs)
    waves = [(0, b0, n, None) for b0, n in plan]
    if nj > 1 and len(plan) > 1 and not has_global_atomics(kernel):
        results = _run_parallel(kernel, buffers, waves, run_wave, written, nj, progress,
                                int(ids.size))
    else:
        results, done = [], 0
        for i in range(len(plan)):
            if progress is not None:
                progress(done, int(ids.size))
            results.append(run_wave(i))
            done += plan[i][1]
    wall = time.perf_counter() - t0
    out = []
    for j in range(P):
        st = KernelStats(kernel.name, grid, T, kernel.shared_bytes,  # type: ignore[arg-type]
                         lanes_per_wave=(plan[0][1] if plan else 0) * T)
        for c in counters:
            setattr(st, c, int(sum(int(r[c][j]) for r in results)))
        for r in results:
            for lay, v in r["mfl"].items():
                st.matrix_flops[lay] = st.matrix_flops.get(lay, 0) + int(v[j])
        st.flops_by_dtype = {d: int(sum(int(r["fl"][q][j]) for r in results))
                             for q, d in enumerate(ck.flop_dtypes)}
        st.waves = len(plan)
        st.finish(spec)
        st.wall_s = wall / P
        out.append(st)
    # bank conflicts are counted per wave, not per part: all of them on the first part
    out[0].bank_conflicts = sum(r["bank_conflicts"] for r in results)
    return out


def _run_parallel(kernel: Kernel, buffers, waves, run_wave, written, jobs, progress,
                  total) -> list[dict]:
    """The waves in `jobs` forked workers (parallel.py): stores into shared copies of
    the output buffers, written indices sent back per wave and kept in wave order."""
    shared = SharedOutputs()
    arrays = shared.swap([a for _, a in buffers], [not p.readonly for p, _ in buffers])
    child_bufs = [(p, a) for (p, _), a in zip(buffers, arrays, strict=True)]
    nbuf = len(buffers)

    def in_worker(i: int) -> dict:
        wr = None if written is None else [[] for _ in range(nbuf)]
        r = run_wave(i, child_bufs, wr)
        if wr is not None:
            r["written"] = [np.concatenate(x) if x else None for x in wr]
        return r

    done = [0]

    def on_done(i: int) -> None:
        done[0] += waves[i][2]
        if progress is not None:
            progress(done[0], total)

    if progress is not None:
        progress(0, total)
    try:
        results = run_waves(len(waves), in_worker, jobs, on_done)
    finally:
        shared.copy_back()
    if written is not None:
        for r in results:
            for lst, x in zip(written, r.pop("written"), strict=True):
                if x is not None:
                    lst.append(x)
    return results


def kernel_source(kernel: Kernel) -> str:
    """The Python the simulator generated for `kernel` (for debugging), headed by a
    comment naming the kernel variable of each generated `v<n>`."""
    ck = compiled(kernel)
    names = ", ".join(f"{py} = {name}" for name, py in ck.var_names.items())
    return (f"# variables: {names}\n" if names else "") + ck.source


__all__ = ["simulate", "simulate_parts", "plan_waves", "KernelStats", "SimulationError", "kernel_source", "compiled"]
