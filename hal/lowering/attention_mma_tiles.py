"""Matrix-unit attention tiles: the instruction and the Br x Bc tiles of the matrix-unit
flash kernel (hal.lowering.attention_mma), and the matrix flops it issues.

`attention_mma_choice` picks, among the spec's warp-level matrix instructions for the
operands' dtype (f32 accumulate), the one and the tiles that fit shared memory, threads and
registers best, or says why the kernel stays SIMT: no instruction for the dtypes, P not
rounded to the input dtype by the graph (module doc of attention_mma), no tile fits.
`row_slots` and `column_lane_offsets` read the C layout: the rows a lane holds and the
lanes sharing a row (the softmax statistics' butterflies). `mma_flops` prices the walked
(block, key tile) pairs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

from hal.devices.spec import DeviceSpec, MatrixInstruction
from hal.kernel.mma import FragmentLayout, get_layout
from hal.lowering.tiling import cdiv, round_up

PAD_BYTES = 16
LDMATRIX_LAYOUT = "nv_m16n8k16_b16"


@dataclass(frozen=True)
class AttentionMmaTiles:
    """Br = warps * m query rows per block, Bc keys per tile; D' and Dv' the head dims
    rounded up to the instruction's k and n."""

    br: int
    bc: int
    warps: int
    layout: str
    itemsize: int
    dp: int
    dvp: int

    @property
    def lanes(self) -> int:
        return get_layout(self.layout).lanes

    @property
    def threads(self) -> int:
        return self.warps * self.lanes

    @property
    def pad(self) -> int:
        return PAD_BYTES // self.itemsize

    @property
    def shared_bytes(self) -> int:
        p = self.pad
        elems = [self.br * (self.dp + p), self.bc * (self.dp + p), self.bc * (self.dvp + p),
                 self.br * (self.bc + p)]
        return sum(round_up(x * self.itemsize, 16) for x in elems)

    @property
    def registers(self) -> int:
        """32-bit registers per thread: S and O accumulators, one k step's fragments, the
        running max and sum per row slot, ~24 for addresses (the fused logits and prologue
        ops are the planner's reserve). ptxas gives 127 for the Llama kernel where this
        says 130."""
        lay = get_layout(self.layout)
        slots = len(row_slots(lay))
        acc = (self.bc // lay.n + self.dvp // lay.n) * lay.c_elems
        frags = (lay.a_elems + 2 * lay.b_elems) * self.itemsize // 4
        return acc + frags + 2 * slots + 24

    def as_dict(self) -> dict:
        return asdict(self) | {"threads": self.threads, "shared_bytes": self.shared_bytes}


@dataclass(frozen=True)
class AttentionMmaChoice:
    instruction: MatrixInstruction
    tiles: AttentionMmaTiles


def row_slots(lay: FragmentLayout) -> list[int]:
    """The distinct C-row offsets a lane holds (its row slots), in order."""
    return sorted({int(r) for r in lay.offsets["c"][:, 0]})


def column_lane_offsets(lay: FragmentLayout) -> list[int]:
    """Xor offsets over the lane bits that select a C column: the lanes sharing a row."""
    out = []
    for _coef, div, mod in lay.base["c"][1]:
        if div & (div - 1) or mod & (mod - 1):
            raise ValueError(f"mma layout {lay.name}: C column lane terms are not bit fields")
        out += [div << b for b in range(mod.bit_length() - 1)]
    return out


def attention_mma_choice(pat, spec: DeviceSpec, reserve: int = 0) -> AttentionMmaChoice | str:
    """The matrix instruction and tiles of attention `pat` on `spec` (`reserve` registers
    per thread kept for the fused logits and prologue ops), or why the kernel stays SIMT
    (no instruction for the dtypes, P not in the input dtype, no tile fits)."""
    q, k = pat.qk.inputs
    p_val, v = pat.pv.inputs
    dt = q.dtype
    # warp-level instructions (mma.sync, MFMA): the Hopper path's warpgroup wgmma is not
    # used for attention yet
    instrs = [mi for mi in spec.usable_matrix_instructions()
              if mi.scope == "warp" and (mi.a, mi.b, mi.acc) == (dt.name, dt.name, "f32")]
    if not instrs:
        return f"{spec.name} has no matrix instruction for {dt.name} x {dt.name} -> f32"
    if k.dtype != dt or v.dtype != dt:
        return f"Q, K, V dtypes differ ({dt.name}, {k.dtype.name}, {v.dtype.name})"
    if p_val.dtype != dt or not pat.two_pass:
        return (f"P is {p_val.dtype.name} before P@V (the graph does not round it to "
                f"{dt.name}): rounding it for the matrix unit would add an error the graph "
                f"does not have")
    instrs = [mi for mi in instrs if get_layout(mi.layout).lanes == spec.warp_size]
    if not instrs:
        return f"{spec.name}'s matrix instructions are issued by warps of another width " \
               f"than its {spec.warp_size} lanes"
    best = None
    for mi in instrs:
        tiles = _pick_tiles(pat.m, pat.t, pat.d, pat.dv, dt.itemsize, get_layout(mi.layout),
                            spec, math.prod(pat.batch), reserve)
        if tiles is not None and (best is None or _score(tiles, pat.m, pat.t, spec,
                                                         math.prod(pat.batch))
                                  > _score(best[1], pat.m, pat.t, spec, math.prod(pat.batch))):
            best = (mi, tiles)
    if best is None:
        return f"no matrix-unit attention tile fits {spec.name} for head dims {pat.d}/{pat.dv}"
    return AttentionMmaChoice(*best)


def _score(c: AttentionMmaTiles, m: int, t: int, spec: DeviceSpec,
           blocks_per_row_tile: int) -> tuple:
    """Preference: enough blocks to keep a quarter of the units busy, little padding, then
    fewer rows per lane (the softmax statistics live in registers, one set per row a lane
    holds: 2 for mma.sync, 4 for a 16x16 MFMA, 16 for a 32x32 one), key tiles of 64, four
    warps or more, larger Br, fewer registers."""
    busy = cdiv(m, c.br) * blocks_per_row_tile * 4 >= spec.compute_units
    waste = round_up(m, c.br) / max(1, m) + round_up(t, c.bc) / max(1, t)
    slots = len(row_slots(get_layout(c.layout)))
    return (busy, -round(waste, 1), -slots, min(c.bc, 64), min(c.warps, 4), c.br,
            -c.registers)


@functools.lru_cache(maxsize=256)   # pure in its arguments; the spec hashes by identity
def _pick_tiles(m: int, t: int, d: int, dv: int, itemsize: int, lay: FragmentLayout,
                spec: DeviceSpec, blocks_per_row_tile: int,
                reserve: int) -> AttentionMmaTiles | None:
    dp = round_up(d, max(lay.k, 16 // itemsize))
    dvp = round_up(dv, 2 * lay.n if lay.name == LDMATRIX_LAYOUT else lay.n)
    step = math.lcm(lay.n, lay.k)
    cands = []
    for warps in (8, 4, 2, 1):
        for bc in (128, 64, 32, 16, 8):
            if bc % step:
                continue
            tl = AttentionMmaTiles(warps * lay.m, bc, warps, lay.name, itemsize, dp, dvp)
            if tl.threads > spec.max_threads_per_block or \
                    tl.shared_bytes > spec.shared_mem_per_block or \
                    tl.registers + reserve > spec.registers_per_thread_at(tl.threads):
                continue
            cands.append(tl)
    if not cands:
        return None
    return max(cands, key=lambda c: _score(c, m, t, spec, blocks_per_row_tile))


def mma_flops(t: AttentionMmaTiles, tile_pairs: int, passes: int) -> int:
    """Matrix flops the kernel issues: per (block, key tile) pair it walks (causal skipping
    leaves out the tiles above the diagonal: attention_causal.causal_work), Q K^T
    (Br x Bc x D') in each pass and P V (Br x Bc x Dv') once; padded rows, columns and the
    masked keys of walked tiles included."""
    return tile_pairs * 2 * t.br * t.bc * (passes * t.dp + t.dvp)
