"""The grouped raster order of tiled matmuls and the L2 model that prices it.

tiling.group_rows picks how many row panels of A a group holds; the lowering walks tiles in
that order and fusion.cost counts the DRAM re-reads it implies (a wave of compute_units
tiles reads each panel it touches once). The order must visit every tile exactly once for
any group size, including a partial last group, and the modelled re-reads must follow the
wave arithmetic."""

from __future__ import annotations

import dataclasses

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32
from hal.fusion.cost import group_cost
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.lowering.plan import PlanHints
from hal.lowering.tiling import MatmulTiles, blocks_per_unit, group_rows
from hal.reference import random_inputs

MiB = 1 << 20


def matmul_graph(m: int, k: int, n: int, dt=f32):
    b = GraphBuilder("mm")
    x, w = b.input("x", dt, (m, k)), b.input("w", dt, (k, n))
    b.output(b.op("matmul", x, w, name="y"))
    return b.build()


def test_all_row_panels_in_one_group_when_a_and_a_wave_of_b_fit_l2():
    h100 = load_spec("h100-sxm")
    # 2048 x 4096 bf16 A (16 MiB) in 128-row panels: A plus a wave of B panels fits 50 MiB
    assert group_rows(16, 128, 4096, 2, h100) == 16


def test_group_near_sqrt_of_units_when_a_does_not_fit():
    h100 = load_spec("h100-sxm")  # 132 units: sqrt ~ 11.5, nearest power of two 16
    assert group_rows(64, 128, 14336, 2, h100) == 16
    few = dataclasses.replace(h100, compute_units=8)  # sqrt 2.8 -> 4
    assert group_rows(64, 128, 14336, 2, few) == 4
    assert group_rows(3, 128, 14336, 2, few) == 3  # A and a wave of B fit: one group
    tight = dataclasses.replace(few, l2_bytes=8 * MiB)
    assert group_rows(3, 128, 14336, 2, tight) == 2  # never more than the row panels


def test_down_projection_rereads_follow_the_wave_model():
    """Llama's down projection at s2048 (A 56 MiB > L2): the tensor-core kernel's 128x128
    tiles, two resident per SM (registers), so 264 tiles in flight; one group of all 16 row
    panels, 2 waves, each reading all of A: one extra read of A, B once."""
    from hal.lowering.mma_tiles import MmaTiles, mma_in_flight

    h100 = load_spec("h100-sxm")
    # the mma.sync kernel (sm_90a specs take wgmma where TMA fits: checked below)
    h100 = dataclasses.replace(h100, matrix_instructions=tuple(
        mi for mi in h100.matrix_instructions if mi.scope == "warp"))
    g = matmul_graph(2048, 14336, 4096, bf16)
    grp = make_group(g, g.nodes, "down")
    (k,) = lower_group(grp, h100)
    plan = k.meta.plan
    assert plan.strategy == "mma" and plan.math.name
    tiles = MmaTiles.from_dict(plan.tile_sizes)
    assert mma_in_flight(tiles, h100) == 2 * h100.compute_units
    assert plan.detail("group_m") == 16
    cost = group_cost(grp, h100)
    a_b, b_b, y_b = 2048 * 14336 * 2, 14336 * 4096 * 2, 2048 * 4096 * 2
    assert cost.dram_read == a_b + b_b + a_b
    assert cost.dram_write == y_b
    assert any("264 tiles in flight" in n and "A re-read once per wave" in n
               for n in cost.notes)
    one_per_unit = dataclasses.replace(h100, max_blocks_per_unit=1)  # 132 in flight: 4 waves
    assert group_cost(make_group(g, g.nodes, "down"), one_per_unit).dram_read == \
        a_b + b_b + 3 * a_b
    # the Hopper kernel: 128 x 128 tiles, one block of 384 threads per SM (registers), so
    # 132 tiles in flight: 4 waves of the same 16-row-panel group
    wg = make_group(g, g.nodes, "down")
    (k,) = lower_group(wg, load_spec("h100-sxm"))
    assert k.meta.plan.strategy == "wgmma" and k.meta.plan.detail("in_flight") == 132
    assert k.meta.plan.detail("group_m") == 16
    assert group_cost(wg, load_spec("h100-sxm")).dram_read == a_b + b_b + 3 * a_b


def test_blocks_per_unit_takes_the_tightest_limit():
    h100 = load_spec("h100-sxm")
    assert blocks_per_unit(256, 32, 0, h100) == h100.max_threads_per_unit // 256
    assert blocks_per_unit(256, 128, 0, h100) == h100.registers_per_unit // (256 * 128)
    assert blocks_per_unit(128, 32, h100.shared_mem_per_unit // 3, h100) == 3
    assert blocks_per_unit(1024, 255, 0, h100) == 1  # never below one


@pytest.mark.parametrize("units,l2,want", [(4, 4096, 2), (16, 4096, 4), (132, 1 << 30, 7)])
def test_raster_visits_every_tile_once(units, l2, want):
    """A device with a tiny L2 and few units forces small groups and a partial last group;
    the product must still be exact, and no tile is computed twice (bytes written once)."""
    spec = dataclasses.replace(load_spec("h100-sxm"), compute_units=units, l2_bytes=l2,
                               max_blocks_per_unit=1)  # one tile per unit in flight
    g = matmul_graph(6 * 16 + 5, 40, 3 * 16 + 1)  # 7 row panels: the last group is partial
    grp = make_group(g, g.nodes, "mm", hints=PlanHints(matmul_tiles=MatmulTiles(16, 16, 8, 2, 2)))
    (k,) = lower_group(grp, spec)
    assert k.meta.plan.detail("group_m") == want
    r = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec, groups=[grp])
    assert r.report["ok"], r.report
    (st,) = r.stats
    assert st["global_bytes_written"] == 101 * 49 * 4
