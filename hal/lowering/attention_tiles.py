"""Attention tile choice and planning: Br x Bc tiles of the SIMT flash kernel, passes, split-K.

`attention_tiles` picks (Br, Bc, threads per row) that fit the spec's shared memory,
threads and registers; `tiles_for` applies it (or a forced choice) to a matched pattern;
`plan_attention` returns (pattern, tiles, key chunks, reasons) for
planners_tiled.plan_attention_group, which records them in the KernelPlan.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, f32
from hal.lowering.attention_match import AttentionPattern, match_attention
from hal.lowering.tiling import cdiv, round_up


@dataclass(frozen=True)
class AttentionTiles:
    br: int       # query rows per block
    bc: int       # keys per tile
    tpr: int      # threads per query row
    shared_bytes: int
    registers: int
    passes: int = 1   # 2: max and sum first, then P (normalised, rounded as the graph says) @ V

    @property
    def threads(self) -> int:
        return self.br * self.tpr

    def as_dict(self) -> dict[str, int]:
        return asdict(self) | {"threads": self.threads}


# Registers a thread of the SIMT flash kernel needs besides its arrays: indices, addresses,
# the row's running max and sum, loop counters, its fused prologue's values. Calibrated on
# nvcc 13 for sm_80 (2026-12-02, one kernel): the GPT block's f32 attention (D = Dv = 64,
# a bias-add prologue) at Br=128, Bc=128, tpr=8 needs ~66 (it spilled 184 B under the 64 a
# 1024-thread block leaves: 32 array registers + 34); at Bc=64 it takes 63 with no spill.
# AMD's compilers need more than this model says (gfx90a/gfx942 SIMT attention still
# spills at 128 VGPRs with tpr = 8..64): not calibrated.
SIMT_BASE_REGISTERS = 34


def simt_registers(bc: int, tpr: int, d: int, dv: int, qb: int, reserve: int = 0) -> int:
    """32-bit registers per thread of the SIMT flash kernel, the one estimate both the tile
    choice and the plan use: its Bc/tpr scores, Dv/tpr accumulators and D/tpr slice of the
    query row (two registers each in f64), SIMT_BASE_REGISTERS, and an extra `reserve`
    (0 by default: the calibration includes a small prologue; a quarter of the group's
    nodes, as the matrix-unit tiles reserve, made the Llama attention with its RoPE
    prologue unplaceable on scratch-npu's 64 registers)."""
    arrays = cdiv(bc, tpr) + cdiv(dv, tpr) + cdiv(d, tpr)
    return arrays * (2 if qb == 8 else 1) + SIMT_BASE_REGISTERS + reserve


def _smem(br: int, bc: int, d: int, dv: int, qb: int, vb: int, pb: int) -> int:
    parts = [br * d * qb, bc * d * qb, bc * dv * vb, br * bc * pb]
    return sum(round_up(x, 16) for x in parts)


@functools.lru_cache(maxsize=512)  # pure in its arguments; the spec hashes by identity
def attention_tiles(m: int, t: int, d: int, dv: int, qb: int, vb: int, pb: int,
                    blocks_per_row_tile: int, spec: DeviceSpec,
                    reserve: int = 0) -> AttentionTiles | str:
    """The best (Br, Bc, threads per row) that fits the spec, or why none does.

    Fits: Q, K, V and P tiles within shared_mem_per_block, Br * tpr threads whole warps
    within max_threads_per_block, `simt_registers` (with the fused ops' `reserve`) within
    spec.registers_per_thread_at(threads). Preference: enough blocks to keep a quarter of
    the units busy, then the largest Br * Bc (fewest K/V re-reads per byte of shared
    memory), then the larger Br, then more threads."""
    w = spec.warp_size
    cands = []
    for br in (128, 64, 32, 16, 8):
        for bc in (128, 64, 32, 16, 8):
            tpr = w
            while tpr >= 1:
                threads = br * tpr
                regs = simt_registers(bc, tpr, d, dv, qb, reserve)
                smem = _smem(br, bc, d, dv, qb, vb, pb)
                if bc % tpr == 0 and threads % w == 0 and threads <= spec.max_threads_per_block \
                        and regs <= spec.registers_per_thread_at(threads) \
                        and smem <= spec.shared_mem_per_block:
                    cands.append(AttentionTiles(br, bc, tpr, smem, regs))
                tpr //= 2
    if not cands:
        small = _smem(8, 8, d, dv, qb, vb, pb)
        return (f"the smallest tiles (Br=8, Bc=8) need {small / 1024:.1f} KiB of shared memory "
                f"for head dims {d}/{dv}, {spec.name} has "
                f"{spec.shared_mem_per_block / 1024:.1f} KiB per block (or too few registers)")

    def score(c: AttentionTiles) -> tuple:
        busy = cdiv(m, c.br) * blocks_per_row_tile * 4 >= spec.compute_units
        waste = round_up(m, c.br) / max(1, m) + round_up(t, c.bc) / max(1, t)
        return (busy, -round(waste, 1), c.br * c.bc, c.br, min(c.threads, 8 * w), -c.registers)

    return max(cands, key=score)


def tiles_for(pat: AttentionPattern, spec: DeviceSpec,
              forced: tuple[int, int, int] | None = None, reserve: int = 0
              ) -> AttentionTiles | str:
    """The tiles of `pat` on `spec` (attention_tiles), or the forced (br, bc, tpr);
    `reserve`: registers for the group's fused ops (fused_reserve)."""
    qb, vb, pb = (stage_dtype(x.dtype).itemsize for x in (pat.qk.inputs[0], *pat.pv.inputs[::-1]))
    passes = 2 if pat.two_pass else 1
    if forced:
        br, bc, tpr = forced
        return AttentionTiles(br, bc, tpr, _smem(br, bc, pat.d, pat.dv, qb, vb, pb),
                              simt_registers(bc, tpr, pat.d, pat.dv, qb, reserve), passes)
    # Both schedules stage the same tiles (pass 1 only leaves V and P unused).
    tiles = attention_tiles(pat.m, pat.t, pat.d, pat.dv, qb, vb, pb,
                            math.prod(pat.batch), spec, reserve)
    return tiles if isinstance(tiles, str) else replace(tiles, passes=passes)


def schedule_reason(pat: AttentionPattern) -> str:
    """Why the kernel takes one pass over the keys or two (the plan's reason)."""
    if pat.two_pass:
        to = " then ".join(d.name for d in pat.p_round)
        return f"two-pass: P is rounded to {to} before P@V, as the graph says"
    return "one pass: online softmax (P is not rounded before P@V)"


def plan_attention(group, spec: DeviceSpec, forced_tiles: tuple[int, int, int] | None = None,
                   split_k: int | None = None
                   ) -> tuple[AttentionPattern, AttentionTiles, int, tuple[str, ...]] | str:
    """(pattern, tiles, key chunks S, reasons) of an attention group, or why it cannot be
    one kernel on `spec`. Pure: the KernelPlan (planners_tiled.plan_attention_group)
    records the choice; the reasons say one or two passes and split-K."""
    pat = match_attention(group.nodes)
    if isinstance(pat, str):
        return pat
    tiles = tiles_for(pat, spec, forced_tiles)
    if isinstance(tiles, str):
        return tiles
    reasons: list[str] = []
    if split_k is None:  # few row tiles: split the keys (attention_split)
        from hal.lowering.attention_split import choose_split_k

        split_k, split_why = choose_split_k(pat, tiles, spec)
        reasons += [split_why] if split_why else []
    reasons.append(schedule_reason(pat))
    return pat, tiles, split_k, tuple(reasons)


def fused_reserve(group) -> int:
    """Registers the attention kernels keep for a group's fused ops: a quarter of its nodes
    (the SIMT tiles here, the matrix-unit tiles in planners_tiled)."""
    return math.ceil(len(group.nodes) / 4)


def stage_dtype(d: DType) -> DType:
    """Tiles are staged in shared memory in their storage dtype (floats), else f32."""
    return d if d.is_float else f32
