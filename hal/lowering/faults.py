"""Planted lowering faults for the conformance self-test (`hal conformance --self-test`).

Each fault is a named, deliberate bug that a hook inside hal.lowering switches
on (`if ctx.options.fault("missing_barrier"): ...`), one to three lines at the
exact place the real bug would live. The conformance suite must catch every
one of them, by a numeric mismatch or by a simulator check (race,
out_of_bounds). A fault is planted only through the frozen
`hal.lowering.options.LoweringOptions` a lowering runs under
(`LoweringOptions.planting(name)`); there is no module state and no
environment variable. `register_fault` is the extension point.
"""

from __future__ import annotations

FAULTS: dict[str, str] = {}


def register_fault(name: str, description: str) -> None:
    """Declare a fault a lowering hook can plant (the extension point for new ones)."""
    FAULTS[name] = description


register_fault("off_by_one_mask", "pointwise tail mask `i <= numel` instead of `i < numel`")
register_fault("wrong_reduction_identity", "reduce_sum accumulators start at 1 instead of 0")
register_fault("missing_barrier", "no barrier between the partials' shared stores and loads")
register_fault("f16_accumulation", "16-bit floats accumulate in their storage dtype, not f32")
register_fault("swapped_transpose", "transpose reads with the inverse permutation")
register_fault("bf16_truncation", "bf16 stores round toward zero instead of to nearest even")
register_fault("wrong_broadcast_axis", "broadcast_to reads its source along the wrong axis")
register_fault("dropped_epilogue", "matmul epilogue skips the last elementwise op")
# matrix-unit kernels (hal.lowering.matmul_mma)
register_fault("mma_swapped_fragment_halves",
               "matrix-unit A fragments load their two k halves swapped")
register_fault("mma_wrong_k_order",
               "matrix-unit B fragments read the k steps of a tile in reverse order")
register_fault("missing_cp_async_wait",
               "a pipeline stage is read without its wait (cp.async.wait_group, or the "
               "barrier after a register-prefetched stage is stored)")
register_fault("wrong_swizzle",
               "fragment loads read the shared tiles with the unpadded row stride")
register_fault("attention_pv_fragment_transposed",
               "matrix-unit attention reads V's P@V fragments transposed (hal.lowering."
               "attention_mma)")
# Hopper kernels (hal.lowering.matmul_wgmma)
register_fault("wgmma_wrong_swizzle",
               "wgmma descriptors say 64B swizzle for tiles TMA wrote with the 128B swizzle")
register_fault("missing_wgmma_wait",
               "consumers release a stage and read accumulators without wgmma.wait_group")
register_fault("wrong_mbarrier_tx_count",
               "the full barrier's expect_tx counts the A box only, not the B boxes")
register_fault("tma_box_off_by_one", "the A tensor map's box is one row short of the tile")
register_fault("wgmma_missing_full_wait",
               "the Hopper GEMM's consumers read a stage without waiting on its full "
               "mbarrier (its TMA boxes may not have landed)")
register_fault("wgmma_prologue_no_proxy_fence",
               "the Hopper GEMM's A prologue leaves out fence.proxy.async between its "
               "generic shared writes and the wgmma that reads them")
register_fault("wgmma_prologue_no_warpgroup_barrier",
               "the Hopper GEMM's A prologue leaves out the warpgroup's mbarrier between "
               "its threads' shared writes and the wgmma that reads all of them")
register_fault("cluster_local_release",
               "the clustered Hopper GEMM's consumers release a stage to their own producer "
               "only, so the peer's B multicast may overwrite a stage still being read "
               "(hal.lowering.matmul_cluster)")
register_fault("cluster_multicast_mask",
               "the clustered Hopper GEMM multicasts both B halves to CTA rank 0 only "
               "(mask 0b01 instead of 0b11)")
register_fault("wgmma_prologue_unswizzled",
               "the Hopper GEMM's A prologue rewrites the TMA tile at unswizzled addresses "
               "(hal.lowering.matmul_wgmma_prologue)")
register_fault("attention_wgmma_p_fragment_swapped",
               "Hopper attention stores P's register fragment with its two 8-key halves "
               "swapped (hal.lowering.attention_wgmma)")
# issue 21: one per lowering module at least, and the misses the issue measured
register_fault("split_drops_partial_chunk", "split reduction: k = row_len // chunk drops the "
               "partial last chunk")
register_fault("butterfly_offset_16", "reduction shuffle tree starts at offset 16 (right only "
               "for 32-lane warps)")
register_fault("row_block_partial_warp", "tiling.row_block returns half a warp short of whole "
               "warps")
register_fault("unravel_wrong_extent", "KernelContext.unravel takes inner coordinates of rank>=3 "
               "modulo extent + 1")
register_fault("grid_stride_block_step", "pointwise grid-stride loop steps by blockDim, not "
               "blockDim * gridDim")
register_fault("prologue_floor_k", "norm->matmul prologue row statistics run K // warp steps")
register_fault("raster_full_last_group", "matmul grouped raster assumes a full last group of "
               "row panels")
register_fault("matmul_k_tail_unmasked", "matmul A tile loads past K are not masked")
register_fault("attention_key_mask", "attention scores of keys past T are not masked")
register_fault("attention_causal_overskip", "causal attention's key loop stops one tile "
               "early: the tile holding the block's diagonal is skipped too")
register_fault("attention_no_rescale", "online softmax does not rescale the accumulator by "
               "exp(m_old - m_new)")
register_fault("split_k_combine_unscaled", "split-K combine adds chunk accumulators without "
               "exp(m_s - M)")
register_fault("scan_reverse_off_by_one", "reverse cumsum reads position length - t")
register_fault("transpose_tile_pitch", "tiled transpose reads its padded tile with pitch T, "
               "not T + 1")


def truncate_bf16(e):
    """`e` nudged toward zero by just under half a bf16 ulp: RNE of it is truncation."""
    from hal.kernel.ir import Binary, Const, Unary

    c = e.dtype
    mag = Unary("exp2", Binary("sub", Unary("floor", Unary("log2", Unary("abs", e))),
                               Const(7.0, c)))
    return Binary("sub", e, Binary("mul", Unary("sign", e), Binary("mul", mag, Const(0.4999, c))))
