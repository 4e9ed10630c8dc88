"""Hopper prefill attention (hal.lowering.attention_wgmma): the plan takes the wgmma + TMA
kernel on sm_90a for eligible shapes and records why (or why not) as `attention_path`; the
cost model prices it at the wgmma rate; the simulated kernel matches the float64 reference
(causal, GQA, T != S, D = 64/128/256, f16, one or two consumer warpgroups); the register-A
wgmma reads P through the A fragment layout written out here from the PTX ISA; planted
faults are caught; the rendered kernel compiles for sm_90a with HGMMA (register A) and
UTMALDG in its SASS."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cuda.render import render_cuda
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion.plan import plan
from hal.ir import GraphBuilder
from hal.kernel import ir_async as ira
from hal.kernel.ir import walk_stmts
from hal.kernel.wgmma import a_fragment_table
from hal.lowering import lower_group, plan_group
from hal.lowering.options import LoweringOptions
from hal.reference import random_inputs
from hal.render.disasm import count_instructions, cuobjdump_path


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def sdpa(dt: str, q, kv, causal: bool):
    b = GraphBuilder("att")
    d = dtype(dt)
    b.output(b.op("scaled_dot_product_attention", b.input("q", d, q), b.input("k", d, kv),
                  b.input("v", d, kv), causal=causal))
    return b.build()


def attention_plan(g, device):
    spec = load_spec(device) if isinstance(device, str) else device
    group = next(x for x in plan(g, spec).groups if x.kind == "attention")
    return group, plan_group(group, spec), spec


@pytest.mark.parametrize("device", ["h100-sxm", "h200"])
def test_plan_takes_wgmma_on_sm90a_and_prices_it_at_the_wgmma_rate(device):
    _g, p, spec = attention_plan(sdpa("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True), device)
    assert p.strategy == "flash_attention_wgmma", p.reasons
    path, why = p.detail("attention_path")
    assert path == "wgmma+tma" and "P from registers" in why
    wg = spec.matrix_instruction("bf16", "bf16", "f32", "warpgroup")
    assert p.math.name == wg.name                      # one truth: the cost model's rate
    assert dict(p.flops_by_math)[p.math] > 0
    assert p.block == 256 and p.grid == (3, 2, 1)      # 4 blocks for 132 units: 64 rows
    _g, p, spec = attention_plan(sdpa("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True),
                                 dataclasses.replace(spec, compute_units=4))
    assert p.block == 384 and p.grid == (2, 2, 1)      # 128-row tiles fill 4 units


@pytest.mark.parametrize("dt,q,kv,causal,device,why", [
    ("bf16", (1, 2, 128, 32), (1, 2, 128, 32), True, "h100-sxm", "head dims 32/32"),
    ("bf16", (1, 2, 40, 128), (1, 2, 40, 128), False, "h100-sxm", "40 query rows"),
    ("bf16", (1, 4, 4, 64), (1, 1, 4096, 64), False, "h100-sxm", "split-K over the keys"),
])
def test_plan_keeps_mma_sync_with_the_reason(dt, q, kv, causal, device, why):
    _g, p, _spec = attention_plan(sdpa(dt, q, kv, causal), device)
    assert p.strategy == "flash_attention_mma", p.reasons
    path, reason = p.detail("attention_path")
    assert path == "mma.sync" and why in reason, reason


def test_no_attention_path_where_there_is_no_warpgroup_mma():
    _g, p, _spec = attention_plan(sdpa("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True),
                                  "a100-sxm")
    assert p.strategy == "flash_attention_mma" and p.detail("attention_path") is None


FOUR_UNITS = dataclasses.replace(load_spec("h100-sxm"), compute_units=4)


@pytest.mark.parametrize("dt,q,kv,causal,device", [
    ("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True, "h100-sxm"),     # causal, partial tile
    ("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True, FOUR_UNITS),     # 2 consumers
    ("f16", (1, 4, 100, 64), (1, 2, 100, 64), True, FOUR_UNITS),        # GQA, 2 consumers
    ("bf16", (2, 2, 70, 64), (2, 2, 200, 64), False, "h100-sxm"),       # T != S, D = 64
    ("f16", (1, 4, 100, 64), (1, 2, 100, 64), True, "h200"),            # GQA, causal
    ("bf16", (1, 1, 64, 128), (1, 1, 64, 128), False, "h200"),          # one consumer
    ("bf16", (1, 1, 65, 256), (1, 1, 90, 256), False, "h100-sxm"),      # D 256: 64-key tiles
])
def test_wgmma_attention_matches_reference(dt, q, kv, causal, device):
    g = sdpa(dt, q, kv, causal)
    _group, p, spec = attention_plan(g, device)
    assert p.strategy == "flash_attention_wgmma", p.reasons
    r = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec)
    assert r.report["ok"], r.report
    (st,) = [s for s in r.stats if s["kind"] == "attention"]
    # the simulator's matrix flops are the plan's (the walked key tiles, padding included)
    assert st["matrix_flops"] == {"wg_m64nNk16_b16": dict(p.flops_by_math)[p.math]}


def test_gqa_over_bshd_tensors_maps_rows_in_two_pieces():
    """Q as [B, S, H, D] transposed to heads: a kv head's rows (head in group, position) are
    two strided pieces, a 3-d box when tiles do not straddle a head (S % 64 == 0), else
    the mma.sync kernel with the reason."""
    def graph(s):
        b = GraphBuilder("bshd")

        def heads(name, h):
            return b.op("transpose", b.input(name, dtype("bf16"), (1, s, h, 64)),
                        perm=[0, 2, 1, 3])
        b.output(b.op("scaled_dot_product_attention", heads("q", 4), heads("k", 2),
                      heads("v", 2), causal=True))
        return b.build()

    g = graph(128)
    group, p, spec = attention_plan(g, "h100-sxm")
    assert p.strategy == "flash_attention_wgmma", p.reasons
    (k,) = lower_group(group, spec)
    qmap = next(m for m in k.tensor_maps if m.name.startswith("tmap_q"))
    assert qmap.dims[:3] == (64, 128, 2) and qmap.box[:3] == (64, 64, 1)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec)
    assert r.report["ok"], r.report
    _g, p, _spec = attention_plan(graph(100), "h100-sxm")
    assert p.strategy == "flash_attention_mma"
    assert "nor two whose inner one holds whole 64-row tiles" in p.detail("attention_path")[1]


def test_kernel_structure_register_a_and_roles():
    g = sdpa("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True)
    group, _p, spec = attention_plan(g, FOUR_UNITS)
    (k,) = lower_group(group, spec)
    assert k.block == 384                              # producer + 2 consumer warpgroups
    ws = [s for s in walk_stmts(k.body) if isinstance(s, ira.Wgmma)]
    rs = [s for s in ws if s.a_regs is not None]
    # pass 1 and pass 2: 2 x D/16 Q K^T wgmmas; P V: BN/16 register-A wgmmas, V trans-b
    assert len(ws) - len(rs) == 2 * 128 // 16 and len(rs) == 128 // 16
    assert all(s.trans_b and s.a_desc is None for s in rs)
    assert [s.a_off for s in rs] == [8 * kk for kk in range(8)]
    assert len([s for s in k.body if isinstance(s, ira.Roles)]) == 1
    assert {m.name.split("_")[1] for m in k.tensor_maps} == {"q", "k", "v"}


def test_a_fragment_table_is_the_ptx_register_layout():
    # PTX ISA 9.7.15.5.1.1, wgmma .m64nNk16 A in registers: warp w rows 16 w..; a0,a1:
    # (groupID, 2 tig + 0/1), a2,a3: row + 8, a4,a5: col + 8, a6,a7: both
    t = a_fragment_table()
    for th in range(128):
        w, g, tig = th // 32, (th % 32) // 4, th % 4
        want = [(16 * w + g, 2 * tig), (16 * w + g, 2 * tig + 1),
                (16 * w + g + 8, 2 * tig), (16 * w + g + 8, 2 * tig + 1),
                (16 * w + g, 2 * tig + 8), (16 * w + g, 2 * tig + 9),
                (16 * w + g + 8, 2 * tig + 8), (16 * w + g + 8, 2 * tig + 9)]
        assert [tuple(int(x) for x in t[th, e]) for e in range(8)] == want
    assert len({(int(r), int(c)) for r, c in t.reshape(-1, 2)}) == 64 * 16


def test_planted_faults_are_caught():
    g = sdpa("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True)
    spec = FOUR_UNITS
    bad = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec,
                                    lowering_options=LoweringOptions.planting(
                                        "attention_wgmma_p_fragment_swapped"))
    assert not bad.report["ok"]          # P's 8-key halves swapped: wrong numbers
    with pytest.raises(SimulationError, match="race.*s_acc before wgmma.wait_group"):
        CpuSimBackend().run_graph(g, random_inputs(g, 3), spec,
                                  lowering_options=LoweringOptions.planting(
                                      "missing_wgmma_wait"))


def test_rendered_kernel_uses_the_register_form():
    g = sdpa("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True)
    group, _p, spec = attention_plan(g, "h100-sxm")
    (k,) = lower_group(group, spec)
    src = render_cuda(k, spec)
    assert "hal_wgmma_m64n128k16_bf16_rs_tb(" in src
    assert '{%64, %65, %66, %67}, %68, p, 1, 1, 1;' in src      # A regs, B desc, tnspB
    assert src.count("cp.async.bulk.tensor.3d") == 1            # one helper, Q/K/V maps


@pytest.mark.skipif(not shutil.which("nvcc") or cuobjdump_path() is None,
                    reason="nvcc or cuobjdump (nvidia-cuda-cuobjdump wheel) not installed")
def test_sass_has_register_a_hgmma_and_utmaldg(tmp_path):
    # the GPU check's shape (Llama-3-8B heads): 2 consumer warpgroups, 512 blocks
    g = sdpa("bf16", (1, 32, 2048, 128), (1, 8, 2048, 128), True)
    group, _p, spec = attention_plan(g, "h100-sxm")
    assert group and _p.block == 384
    (k,) = lower_group(group, spec)
    r = count_instructions(render_cuda(k, spec), "cuda", "sm_90a", name="attn_wgmma",
                           out_dir=tmp_path)
    assert not isinstance(r, str), r
    sass = r.listing.read_text()
    assert r.counts.get("HGMMA", 0) == 24, r.forms      # 2 x 8 Q K^T + 8 P V
    assert sass.count("gdesc[") and ".tnspB" in sass
    # P V: A from registers (HGMMA Rd, Ra, gdesc[..].tnspB)
    assert len([ln for ln in sass.splitlines() if "HGMMA" in ln and ", gdesc" in ln
                and ".tnspB" in ln]) == 8
    assert r.counts.get("UTMALDG", 0) >= 3 and r.counts.get("HMMA", 0) == 0, r.forms
    assert r.forms.get("USETMAXREG.DEALLOC.CTAPOOL", 0) == 1, r.forms
    # P is packed before wgmma.fence (hal_wgmma_fence_regs): one warpgroup.arrive per wgmma
    # group (pass-1 Q K^T, pass-2 Q K^T, P V), none injected between the P V wgmmas
    assert sass.count("WARPGROUP.ARRIVE") == 3, r.forms


def test_cuda_runtime_encodes_the_attention_maps_and_launches(monkeypatch):
    """The CUDA backend over the fake driver (tests/fake_cuda.py: launches run on cpu_sim
    with the memory the driver holds): three tensor maps encoded by cuTensorMapEncodeTiled,
    Q's a 4-d map of a [B, S, H, D] tensor (GQA rows in two pieces), and the numbers of
    causal attention."""
    import numpy as np
    from fake_cuda import FakeCuda, FakeCudaDriver

    from hal.backend import Availability
    from hal.backends.cuda.backend import CudaBackend
    from hal.dtypes import bf16, cast

    class _Fake(CudaBackend):
        def __init__(self, driver):
            super().__init__()
            self._driver = driver
            self._availability = Availability(True, "FakeCuda")

    s, hq, hkv, d = 128, 4, 2, 64
    b = GraphBuilder("bshd")
    x = {n: b.input(n, dtype("bf16"), (1, s, h, d)) for n, h in (("q", hq), ("k", hkv),
                                                                  ("v", hkv))}
    b.output(b.op("scaled_dot_product_attention",
                  *(b.op("transpose", x[n], perm=[0, 2, 1, 3]) for n in "qkv"), causal=True))
    g = b.build()
    group, p, spec = attention_plan(g, "h100-sxm")
    assert p.strategy == "flash_attention_wgmma"
    (kern,) = lower_group(group, spec)
    fake = FakeCuda(spec)
    be = _Fake(FakeCudaDriver(fake))
    rng = np.random.default_rng(0)
    vals = {n: np.asarray(cast(rng.standard_normal((1, s, h, d)), bf16))
            for n, h in (("q", hq), ("k", hkv), ("v", hkv))}
    ck = be.compile(kern, spec)
    bufs = []
    for prm in kern.params:
        buf = be.allocate(prm.numel * prm.dtype.itemsize, prm.dtype, prm.shape)
        if prm.readonly:
            be.copy_in(buf, vals[kern.meta.buffers[prm.name]])
        else:
            out = buf
        bufs.append(buf)
    be.launch(ck, bufs, kern.grid, (kern.block,))
    be.synchronize()
    assert not fake.faults, fake.faults
    encodes = [c for c in fake.calls if c[0] == "cuTensorMapEncodeTiled"]
    assert len(encodes) == 3
    q_buf = bufs[[prm.name for prm in kern.params].index(kern.tensor_maps[0].buffer)]
    q_map = next(c for c in encodes if c[4] == q_buf.handle)
    # (D, S, head in group, kv head): box 64 x 64 rows x 1 x 1, 128B swizzle, zero fill
    assert q_map[5] == [64, 128, 2, 2] and q_map[7] == [64, 64, 1, 1] and q_map[10] == "128B"
    y = be.copy_out(out).astype(np.float64).reshape(1, hq, s, d)
    qf, kf, vf = (vals[n].astype(np.float64).transpose(0, 2, 1, 3) for n in "qkv")
    kf, vf = np.repeat(kf, hq // hkv, axis=1), np.repeat(vf, hq // hkv, axis=1)
    sc = qf @ kf.transpose(0, 1, 3, 2) / np.sqrt(d)
    sc = np.where(np.tril(np.ones((s, s), bool)), sc, -np.inf)
    pr = np.exp(sc - sc.max(-1, keepdims=True))
    ref = (pr / pr.sum(-1, keepdims=True)) @ vf
    np.testing.assert_allclose(y, ref, rtol=3e-2, atol=3e-2)
