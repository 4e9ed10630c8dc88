"""Which matrix instruction a matmul group uses and how each operand reaches its shared tile.

`mma_choice` picks the spec's matrix instruction and the tiles (hal.lowering.mma_tiles)
for a group's contractions, or None (the SIMT kernel); `a_access` / `b_accesses` say
whether an operand is a group input laid out for 128-bit vector copies (one transpose
looked through) or is computed element by element; `pipeline_stages` is the depth of the
cp.async ring those accesses allow. The planner (hal.lowering.planners_tiled) records
the choice and the stages; the emitters (matmul_mma's mma.sync/MFMA kernel,
matmul_wgmma's Hopper kernel) build them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.devices.spec import DeviceSpec, MatrixInstruction
from hal.dtypes import compute_dtype
from hal.ir.graph import Node, Value
from hal.kernel.mma import get_layout
from hal.lowering.mma_tiles import MmaTiles, mma_tiles


@dataclass(frozen=True)
class MmaChoice:
    instruction: MatrixInstruction
    tiles: MmaTiles


def mma_choice(dots: list[Node], spec: DeviceSpec, reserve: int = 0,
               forced: bool = False) -> MmaChoice | None:
    """The matrix instruction and tiles for a matmul group (one contraction, a dual GEMM
    sharing one tile grid, or siblings of different N in column-panel segments), or None
    (the SIMT kernel)."""
    from hal.lowering.matmul import contraction_dims, one_tile_grid
    from hal.ops.contraction import accumulation_dtype

    if not dots or forced:
        return None
    dual = len(dots) > 1 and one_tile_grid(dots)
    dot = dots[0]
    a, b = dot.inputs
    acc = compute_dtype(accumulation_dtype(a.dtype, dot.attrs))
    instr = spec.matrix_instruction(a.dtype.name, b.dtype.name, acc.name)
    if instr is None or any(d.inputs[1].dtype != a.dtype for d in dots):
        return None
    if get_layout(instr.layout).lanes != spec.warp_size:
        # the instruction is issued by a warp of its own width (a spec variant with another
        # warp size cannot issue it): the SIMT kernel
        return None
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)
    m = math.prod(a.shape[i] for i in lf)
    k = math.prod(a.shape[i] for i in lc)
    # siblings of different N (column-panel segments): tiles for the smallest N
    n = min(math.prod(d.inputs[1].shape[i] for i in contraction_dims(d)[5]) for d in dots)
    if not (m and n and k):
        return None
    t = mma_tiles(m, n, k, spec, instr, a.dtype.itemsize, reserve, len(dots) if dual else 1)
    return None if t is None else MmaChoice(instr, t)


@dataclass(frozen=True)
class OperandAccess:
    """How an operand reaches its shared tile: `source` is the global value read by vector
    copies (None: element by element through the builder); `dims` its (batch, outer,
    inner) axes, inner contiguous; `inner_is_k`: the tile's rows are the non-k axis."""

    source: Value | None
    dims: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = ((), (), ())
    inner_is_k: bool = True


def _direct(v: Value, producers: dict, batch, outer, inner, vec: int,
            inner_is_k: bool) -> OperandAccess | None:
    """A vector-copy access to `v` when it is a group input laid out (batch, outer, inner)
    contiguously with one inner axis of a multiple of `vec` elements (one transpose of a
    group input is looked through)."""
    src, perm = v, None
    node = producers.get(v.name)
    if node is not None:
        if node.op != "transpose" or node.inputs[0].name in producers:
            return None
        src, perm = node.inputs[0], node.attrs["perm"]
    if perm is not None:
        batch, outer, inner = (tuple(perm[d] for d in dd) for dd in (batch, outer, inner))
    if len(inner) != 1 or (*batch, *outer, *inner) != tuple(range(src.rank)) or \
            src.shape[inner[0]] % vec:
        return None
    return OperandAccess(src, (tuple(batch), tuple(outer), tuple(inner)), inner_is_k)


def a_access(dot: Node, producers: dict, vec: int) -> OperandAccess:
    """How A reaches its shared tile (vector copies or element by element)."""
    from hal.lowering.matmul import contraction_dims

    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)
    return _direct(dot.inputs[0], producers, lb, lf, lc, vec, True) or OperandAccess(None)


def b_accesses(dots: list[Node], producers: dict, vec: int) -> tuple[list[OperandAccess], bool]:
    """How each B of a segment reaches its tile, and whether the segment's B tiles are laid
    out [BN][BK] (every B k-contiguous) rather than [BK][BN]."""
    from hal.lowering.matmul import contraction_dims

    _lb, rb, _lc, rc, _lf, rf = contraction_dims(dots[0])
    accs = [_direct(d.inputs[1], producers, rb, rf, rc, vec, True)
            or _direct(d.inputs[1], producers, rb, rc, rf, vec, False) or OperandAccess(None)
            for d in dots]
    n_major = all(x.source is not None and x.inner_is_k for x in accs)
    return [x if x.inner_is_k == n_major else OperandAccess(None) for x in accs], n_major


def pipeline_stages(group, segments: list[list[Node]], tiles: MmaTiles,
                    spec: DeviceSpec) -> int:
    """Shared-memory stages of the matrix-unit kernel: the tiles' multi-stage cp.async ring
    when the spec has async copies and every operand reaches its tile by vector copies,
    else 1 (one stage plus a register prefetch). The planner records it; the emitter
    builds it."""
    producers = {o.name: nd for nd in group.nodes for o in nd.outputs}
    if "async_copy" not in spec.capabilities or tiles.stages <= 1:
        return 1
    if a_access(segments[0][0], producers, tiles.vec).source is None:
        return 1
    for dots in segments:
        accs, _n_major = b_accesses(dots, producers, tiles.vec)
        if any(x.source is None for x in accs):
            return 1
    return tiles.stages
