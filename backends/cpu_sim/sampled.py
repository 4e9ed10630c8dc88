"""Sampled simulation of a kernel: `choose_blocks`, `run_group_sampled`.

For graphs too large to simulate every block (in the spirit of sampled GPU
simulation: simulate representative blocks, extrapolate the rest):

* which blocks: every block on a boundary of the grid (first and last index
  along each grid axis, and the first and last block in launch order, which
  for the rasterised matmul and attention grids are the first and the last
  output tiles, where row and column tails are masked), plus a seeded random
  sample of `fraction` of the other (interior) blocks. Both sets are simulated
  exactly, with every check on. A batch axis of the plan's launch
  (hal.lowering.plan.Launch.batch_axes: a matmul's batch, an attention's heads)
  has no boundary of its own: its entries run the same code on their own slices
  without tails, so its first and last entry are not boundary classes (the first
  and last block in launch order still cover the buffers' ends);
  a launch in thread-block clusters is sampled in whole clusters (a CTA's peers
  run with it): a cluster with a boundary block is a boundary cluster, and
  `fraction` of the interior clusters are sampled;
* outputs: the group's outputs first get correct values everywhere, so that
  later kernels read correct inputs: the whole-output reference's values where
  it computes them under the same names (cpu_sim's backend hands them over as
  `known`: a group's outputs, a large attention inside it), else computed
  functionally here (`functional_outputs`), node by node with each op's
  reference rounded to every value's declared dtype (the dtypes the kernel
  stores), in float64 except contractions of f32-or-narrower operands, which
  run in float32 as the kernels accumulate;
  then every element a simulated block stored replaces that value. The
  simulated elements are compared with the values they replaced (the parity on
  the simulated blocks); the graph's outputs are compared with the reference
  as in an exact run (the parity on the whole output);
* counters: boundary blocks count as themselves; the interior sample's counts
  (vector and matrix flops, bytes, barriers, atomics) are scaled to all interior
  blocks. The sample is split into up to four strata of blocks, and the spread of
  their per-block means gives the stated relative error (three standard errors; 0
  when every sampled interior block counted the same). The boundary blocks and the
  strata run together as one launch of that many blocks (usually one wave), each
  lane count split per part (tally.py), so the kernel's statement stream runs once,
  not once per part; bank conflicts are not extrapolated;
* groups of several kernels (one kernel reads another's scratch) and kernels
  with global atomics (a partial sum is not a block's output) run exactly, and
  the report says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.kernel.ir import AtomicAdd, For, If, Kernel

COUNTERS = ("global_bytes_read", "global_bytes_written", "shared_bytes_read",
            "shared_bytes_written", "barriers", "atomics")
STRATA = 4


@dataclass(frozen=True)
class SampleOptions:
    """`fraction` of the interior blocks, drawn with `seed`."""

    fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        from hal.errors import HalError

        if not 0.0 < self.fraction <= 1.0:
            raise HalError(f"--sample {self.fraction}: the sampled fraction must be in (0, 1]",
                           hint="e.g. --sample 0.05 simulates 5% of the interior blocks")


def choose_blocks(grid: tuple[int, int, int], options: SampleOptions,
                  batch_axes: tuple[int, ...] = (), unit: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(boundary block ids, sampled interior block ids), linear ids in launch order;
    `batch_axes`: grid axes with no boundary class (see the module docstring).

    `unit` > 1 (cluster_unit: the launch's thread-block clusters are runs of `unit`
    consecutive ids): whole clusters are chosen, because a CTA's peers must run with it
    and are simulated, counted and reported with it. A cluster holding a boundary block
    is a boundary cluster, and `fraction` of the interior clusters are sampled; choosing
    blocks and widening them afterwards simulated about twice the stated fraction and
    counted every peer as a second sampled block (2x counters)."""
    gx, gy, gz = grid
    nb = gx * gy * gz
    lin = np.arange(nb, dtype=np.int64)
    bx, by, bz = lin % gx, (lin // gx) % gy, lin // (gx * gy)
    edge = np.zeros(nb, bool)
    for axis, (c, g) in enumerate(((bx, gx), (by, gy), (bz, gz))):
        if g > 1 and axis not in batch_axes:
            edge |= (c == 0) | (c == g - 1)
    edge[0] = edge[-1] = True
    if unit > 1:
        if nb % unit:
            raise ValueError(f"choose_blocks: {nb} blocks are not whole clusters of {unit}")
        edge = np.repeat(edge.reshape(-1, unit).any(axis=1), unit)
    boundary = lin[edge]
    interior = lin[::unit][~edge[::unit]] // unit   # interior clusters (blocks: unit 1)
    n = min(interior.size, max(1, math.ceil(options.fraction * interior.size))) \
        if interior.size else 0
    rng = np.random.default_rng(options.seed)
    sample = np.sort(rng.choice(interior, size=n, replace=False)) if n else interior[:0]
    return boundary, (sample[:, None] * unit + np.arange(unit)).reshape(-1)


def cluster_unit(kernel: Kernel) -> int:
    """Blocks per run of consecutive linear block ids that holds whole clusters (the
    verifier made each grid axis a multiple of the cluster's)."""
    cx, cy, cz = kernel.cluster
    gx, gy, _gz = kernel.grid
    if cx * cy * cz == 1:
        return 1
    if cy == cz == 1:
        return cx
    return gx * cy if cz == 1 else gx * gy * cz


def has_global_atomics(kernel: Kernel) -> bool:
    shared = {b.name for b in kernel.shared}

    def walk(body) -> bool:
        for s in body:
            if isinstance(s, AtomicAdd) and s.buffer not in shared:
                return True
            if isinstance(s, For) and walk(s.body):
                return True
            if isinstance(s, If) and (walk(s.then) or walk(s.orelse)):
                return True
        return False

    return walk(kernel.body)


def samplable(kernels: list[Kernel]) -> str | None:
    """None when the group's kernel can be sampled, else the reason it runs exactly."""
    if len(kernels) != 1:
        return f"{len(kernels)} kernels share scratch buffers"
    if has_global_atomics(kernels[0]):
        return "global atomics accumulate partial results"
    return None


def _composite_interiors(group: Any, composites: Mapping[str, Any],
                         buffers: Mapping[str, np.ndarray]) -> dict[int, Any]:
    """{id of a group node: the composite node} for the nodes of each large composite's
    decomposition inside `group` (the ancestors of its output down to its inputs); the
    node giving the output maps to the composite, the others to None."""
    from hal.reference_blocked import use_blocked

    produced = {o.name: n for n in group.nodes for o in n.outputs}
    inner: dict[int, Any] = {}
    done: set[int] = set()
    for out, cnode in composites.items():
        if out not in produced or id(cnode) in done or not use_blocked(cnode):
            continue
        done.add(id(cnode))
        stop = {v.name for v in cnode.inputs}
        found: dict[int, Any] = {}
        stack = [out]
        while stack:
            name = stack.pop()
            n = produced.get(name)
            if name in stop or n is None or id(n) in found:
                continue
            found[id(n)] = None
            stack.extend(v.name for v in n.inputs)
        outside = {o.name for n in group.nodes if id(n) not in found for o in n.outputs}
        if all(v.name in outside or v.name in buffers for v in cnode.inputs):
            inner.update(found)
            inner[id(produced[out])] = cnode
    return inner


def blocked_composites(graph: Any, prim: Any) -> dict[str, Any]:
    """{value name: composite node of `graph` with a blocked evaluator} for each such
    node's output and the values of `prim` it is a reshape (a view) of, downstream
    first (a fused group may end before the decomposition's final reshapes)."""
    from hal.reference_blocked import BLOCKED

    producer = {o.name: n for n in prim.nodes for o in n.outputs}
    out: dict[str, Any] = {}
    for cnode in graph.nodes:
        if cnode.op not in BLOCKED or len(cnode.outputs) != 1:
            continue
        name = cnode.outputs[0].name
        while name not in out:
            out[name] = cnode
            p = producer.get(name)
            if p is None or p.op != "reshape":
                break
            name = p.inputs[0].name
    return out


def functional_outputs(group: Any, buffers: Mapping[str, np.ndarray],
                       composites: Mapping[str, Any] | None = None,
                       known: Mapping[str, np.ndarray] | None = None
                       ) -> tuple[dict[str, np.ndarray], int]:
    """The group's outputs, flat, computed node by node with each op's float64 reference
    and rounded to every value's declared dtype, and how many nodes that computed.
    `composites` (blocked_composites): a large composite whose decomposition lies in the
    group (attention at model scale) is computed by its blocked evaluator
    (hal.reference_blocked) instead, so no score-sized float64 tensor exists. `known`:
    values already computed under their names with these semantics (the whole-output
    reference's, in their declared dtypes), a group output or a composite's output among
    them; only the nodes the outputs still need are computed."""
    from hal.dtypes import cast
    from hal.ops import get_op
    from hal.ops.registry import Category
    from hal.reference import widen
    from hal.reference_blocked import BLOCKED

    wide: dict[str, np.ndarray] = {}
    known = known or {}

    def given(v) -> np.ndarray:   # a value the group does not compute, in its own dtype
        return (known[v.name] if v.name in known else buffers[v.name]).reshape(v.shape)

    def get(v) -> np.ndarray:
        if v.name not in wide:
            wide[v.name] = widen(given(v), v.dtype)
        return wide[v.name]

    keep = {v.name for v in group.outputs}
    last_use = {v.name: i for i, n in enumerate(group.nodes) for v in n.inputs}
    inner = _composite_interiors(group, composites or {}, buffers)
    for i, n in enumerate(group.nodes):   # a composite reads its inputs where it ends
        if inner.get(id(n)) is not None:
            for v in inner[id(n)].inputs:
                last_use[v.name] = max(last_use.get(v.name, i), i)
    need = _needed_nodes(group, inner, known)
    computed = 0   # nodes evaluated here (not taken from `known`)
    with np.errstate(all="ignore"):
        for i, n in enumerate(group.nodes):
            if id(n) not in need:
                continue
            opdef = get_op(n.op)
            if id(n) in inner:
                cnode = inner[id(n)]
                if cnode is not None and cnode.outputs[0].name in known:
                    out = n.outputs[0]
                    wide[out.name] = widen(known[cnode.outputs[0].name].reshape(out.shape),
                                           out.dtype)
                elif cnode is not None:
                    computed += 1
                    cop = get_op(cnode.op)
                    args = [get(v) for v in cnode.inputs]
                    (r,) = BLOCKED[cnode.op](args, cop.check_attrs(cnode.attrs), cnode)
                    out = n.outputs[0]
                    wide[out.name] = _rounded_wide(r.reshape(out.shape), out.dtype, args)
                    _drop_after(cnode, i, last_use, keep, wide)
                _drop_after(n, i, last_use, keep, wide)
                continue
            if opdef.category is Category.CONTRACTION and all(
                    v.dtype.is_float and v.dtype.bits <= 32 for v in n.inputs):
                # the kernels multiply f32 (or narrower) values and accumulate in f32:
                # the same contraction in float32 (BLAS sgemm), not float64; an operand
                # not widened yet (a weight) goes to float32 directly (exact either way)
                args = [(wide[v.name] if v.name in wide else given(v)).astype(np.float32)
                        for v in n.inputs]
            else:
                args = [get(v) for v in n.inputs]
            computed += 1
            results = opdef.reference(args, opdef.check_attrs(n.attrs))
            for out, r in zip(n.outputs, results, strict=True):
                wide[out.name] = _rounded_wide(r, out.dtype, args)
            _drop_after(n, i, last_use, keep, wide)
    outputs = {v.name: known[v.name].reshape(-1) if v.name in known
               else cast(wide[v.name], v.dtype).reshape(-1) for v in group.outputs}
    return outputs, computed


def _needed_nodes(group: Any, inner: Mapping[int, Any],
                  known: Mapping[str, np.ndarray]) -> set[int]:
    """ids of the group's nodes that its outputs need computed or taken: walking back from
    the outputs, a value in `known` ends the walk, and so does a composite's output whose
    composite node's output is known (its inputs are then not needed)."""
    produced = {o.name: n for n in group.nodes for o in n.outputs}
    need: set[int] = set()
    stack = [v.name for v in group.outputs]
    while stack:
        name = stack.pop()
        n = produced.get(name)
        if n is None or id(n) in need or name in known:
            continue
        if id(n) in inner:
            cnode = inner[id(n)]
            if cnode is None:   # inside a composite: its last node stands for it
                continue
            need.add(id(n))
            if cnode.outputs[0].name not in known:
                stack.extend(v.name for v in cnode.inputs)
            continue
        need.add(id(n))
        stack.extend(v.name for v in n.inputs)
    return need


def _rounded_wide(r: Any, dt: Any, args: list[np.ndarray]) -> np.ndarray:
    """An op's result `r` rounded to its value's dtype `dt`, in the wide form (float64,
    int64 or bool); a float64 array the op made itself is rounded in place."""
    from hal.dtypes import cast, round_to
    from hal.reference import widen

    r = np.asarray(r)
    if not (dt.is_float and r.dtype == np.float64):
        return widen(cast(r, dt), dt)
    own = r.flags.owndata and r.flags.writeable and not any(
        np.may_share_memory(r, x) for x in args)
    return round_to(r, dt, out=r if own else None)


def _drop_after(n: Any, i: int, last_use: Mapping[str, int], keep: set[str],
                wide: dict[str, np.ndarray]) -> None:
    for v in n.inputs:   # an intermediate is dropped after its last use
        if last_use.get(v.name) == i and v.name not in keep:
            wide.pop(v.name, None)


def run_kernel_sampled(kernel: Kernel, args: dict[str, Any], spec: Any, how: SampleOptions,
                       simulate_parts: Callable[..., Any], **sim_kw: Any) -> tuple[Any, dict]:
    """Simulate the boundary blocks and the interior sample of `kernel` (args changed in
    place only where those blocks store); return (stats with extrapolated counters,
    sample report with the written indices per buffer parameter). `simulate_parts`
    (simulator.simulate_parts) runs the boundary and the strata as parts of one launch,
    so their waves share the same workers."""
    from .stats import KernelStats

    grid = tuple(int(g) for g in kernel.grid)
    nb = kernel.num_blocks
    batch = batch_axes(kernel)
    unit = cluster_unit(kernel)
    boundary, sample = choose_blocks(grid, how, batch, unit)  # type: ignore[arg-type]
    gparams = [p for p in kernel.params if hasattr(p, "numel")]
    written: list[list[np.ndarray]] = [[] for _ in gparams]
    clusters = sample.reshape(-1, unit)   # a stratum holds whole clusters
    strata = [s.reshape(-1) for s in np.array_split(clusters, min(STRATA, len(clusters)))
              if s.size] if sample.size else []
    cpu0 = time.process_time()
    sb, *st_strata = simulate_parts(kernel, args, spec, [boundary, *strata], written=written,
                                    combine=True, **sim_kw)
    cpu_s = time.process_time() - cpu0
    per_block: list[dict[str, float]] = []
    total = {c: getattr(sb, c) for c in COUNTERS}
    flops_b = dict(sb.flops_by_dtype)
    mfl_b = dict(sb.matrix_flops)
    interior = nb - boundary.size
    scale = interior / sample.size if sample.size else 0.0
    flops_s: dict[str, float] = {}
    mfl_s: dict[str, float] = {}
    sums = {c: 0 for c in COUNTERS}
    wall = sb.wall_s
    for blocks, st in zip(strata, st_strata, strict=True):
        wall += st.wall_s
        per_block.append({c: getattr(st, c) / blocks.size for c in COUNTERS}
                         | {"flops": st.flops / blocks.size})
        for c in COUNTERS:
            sums[c] += getattr(st, c)
        for d, f in st.flops_by_dtype.items():
            flops_s[d] = flops_s.get(d, 0) + f
        for lay, f in st.matrix_flops.items():
            mfl_s[lay] = mfl_s.get(lay, 0) + f
    stats = KernelStats(kernel.name, grid, kernel.block, kernel.shared_bytes)  # type: ignore[arg-type]
    for c in COUNTERS:
        setattr(stats, c, int(round(total[c] + sums[c] * scale)))
    stats.flops_by_dtype = {d: int(round(flops_b.get(d, 0) + flops_s.get(d, 0) * scale))
                            for d in sorted(set(flops_b) | set(flops_s))}
    stats.matrix_flops = {lay: int(round(mfl_b.get(lay, 0) + mfl_s.get(lay, 0) * scale))
                          for lay in sorted(set(mfl_b) | set(mfl_s))}
    stats.waves = sb.waves
    stats.lanes_per_wave = sb.lanes_per_wave
    stats.finish(spec)
    stats.wall_s = wall
    err = 0.0
    if len(per_block) > 1:   # three standard errors of the interior estimate, relative
        for key in (*COUNTERS, "flops"):
            vals = np.array([p[key] for p in per_block], np.float64)
            se = float(vals.std(ddof=1)) / math.sqrt(len(vals))
            est = _boundary(total, [*flops_b.values(), *mfl_b.values()], key) \
                + float(vals.mean()) * interior
            if est > 0:
                err = max(err, 3.0 * se * interior / est)
    simulated = np.concatenate([boundary, sample])
    report = {
        "blocks_simulated": int(simulated.size), "blocks": nb,
        "fraction": simulated.size / nb if nb else 1.0,
        "boundary_blocks": int(boundary.size), "sampled_blocks": int(sample.size),
        "batch_axes": ["xyz"[a] for a in batch],
        "seed": how.seed, "counter_rel_error": err, "sim_cpu_s": round(cpu_s, 3),
        "simulated_block_ids": simulated.tolist(),
        "written": {p.name: _distinct(w, p.numel) for p, w in zip(gparams, written, strict=True)},
    }
    return stats, report


def batch_axes(kernel: Kernel) -> tuple[int, ...]:
    """The batch axes of the plan's launch that `kernel` is (same name and grid); () for a
    hand-built kernel or one whose grid was folded into x (its axes mean other things)."""
    plan = kernel.meta.plan
    if plan is None or kernel.meta.grid_folded is not None:
        return ()
    for launch in plan.launches:
        if launch.name == kernel.name and tuple(launch.grid) == tuple(kernel.grid):
            return tuple(launch.batch_axes)
    return ()


def _distinct(parts: list[np.ndarray], numel: int) -> np.ndarray:
    """The sorted distinct indices of `parts` (np.unique of their concatenation), through a
    mask of the buffer's `numel` elements: stores hit each element several times (tiles
    stored per K step), and a mask is linear where np.unique sorts or hashes them all."""
    if not parts:
        return np.zeros(0, np.int64)
    seen = np.zeros(numel, bool)
    for w in parts:
        seen[w] = True
    return np.flatnonzero(seen)


def _boundary(total: dict, flops: list, key: str) -> float:
    return float(sum(flops)) if key == "flops" else float(total[key])


def block_coords(ids: list[int], grid: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    gx, gy, _ = grid
    return [(i % gx, (i // gx) % gy, i // (gx * gy)) for i in ids]


__all__ = ["SampleOptions", "choose_blocks", "samplable", "functional_outputs",
           "blocked_composites",
           "run_kernel_sampled", "block_coords", "cluster_unit"]
