"""Thread-block clusters on the Hopper GEMM (hal.kernel.ir_cluster, hal.lowering.matmul_cluster,
backends/cpu_sim/cluster_sim.py): the verifier's rules, the plan's choice and its fallbacks,
cpu_sim parity of clustered GEMMs (epilogue, prologue, dual GEMM, siblings, partial tiles)
against float64, the multicast's global-read saving, and the races a cluster can have, each
caught when the synchronisation that prevents it is taken out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.simulator import simulate
from hal.backends.cuda.render import render_cuda
from hal.devices.loader import load_spec
from hal.dtypes import DTYPES, bf16, f16, i64
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.kernel.ir import Barrier, Kernel, SharedBuffer, walk_stmts
from hal.kernel.verify import KernelError, verify_kernel
from hal.lowering import lower_group
from hal.lowering.matmul_cluster import cluster_choice
from hal.lowering.options import LoweringOptions
from hal.reference import random_inputs

H100 = load_spec("h100-sxm")


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _mm(m, k, n, tb=True, batch=0, dt=bf16, epilogue=False):
    b = GraphBuilder("mm")
    lead = (batch,) if batch else ()
    x = b.input("x", dt, (*lead, m, k))
    w = b.input("w", dt, (*lead, n, k) if tb else (*lead, k, n))
    y = b.op("matmul", x, w, transpose_b=tb)
    if epilogue:
        bias = b.op("broadcast_to", b.input("bias", dt, (n,)), shape=[*lead, m, n])
        y = b.op("tanh", b.op("add", y, bias))
    b.output(y)
    return b.build()


def _lower(g, spec=H100, options=None):
    grp = make_group(g, g.nodes, "g")
    return grp, lower_group(grp, spec, options) if options else lower_group(grp, spec)


def _run(g, spec=H100):
    grp, ks = _lower(g, spec)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, groups=[grp])
    return ks, r


def _args(g, k):
    ins = random_inputs(g, 1)
    out = {}
    for p in k.params:
        if hasattr(p, "numel"):
            v = ins.get(k.meta.buffers.get(p.name, p.name))
            out[p.name] = np.zeros(p.numel, p.dtype.np_dtype) if v is None else \
                np.ascontiguousarray(v, p.dtype.np_dtype).ravel()
    return out


# ------------------------------------------------------------------------------- verifier
def _tiny(cluster=(2, 1, 1), grid=(4, 1, 1), body=None) -> Kernel:
    bar = SharedBuffer("bar", i64, 1, 1, 8)
    return Kernel("tiny", [], body if body is not None else [], grid, 128,
                  shared=[bar, SharedBuffer("t", DTYPES["bf16"], 64, 1, 128)], cluster=cluster)


def test_verifier_cluster_rules():
    from hal.kernel.ir import Const

    verify_kernel(_tiny())
    with pytest.raises(KernelError, match="portable size 8"):
        verify_kernel(_tiny((16, 1, 1), (16, 1, 1)))
    with pytest.raises(KernelError, match=r"grid.x = 3 is not a multiple"):
        verify_kernel(_tiny((2, 1, 1), (3, 1, 1)))
    i0 = Const(0, DTYPES["i32"])
    remote = ira.MbarrierArrive("bar", i0, cta=i0)
    verify_kernel(_tiny(body=[remote]))
    with pytest.raises(KernelError, match="without a cluster"):
        verify_kernel(_tiny((1, 1, 1), body=[remote]))
    (k,) = _lower(_mm(256, 64, 64))[1]
    tma = next(s for s in walk_stmts(k.body) if isinstance(s, ira.TmaLoad) and s.multicast)
    tma.multicast = 0b101
    with pytest.raises(KernelError, match="outside the 2-CTA cluster"):
        verify_kernel(k)
    # a cluster barrier under a thread-dependent branch: not every thread reaches it
    from hal.kernel.ir import THREAD_IDX, If

    with pytest.raises(KernelError):
        verify_kernel(_tiny(body=[If(THREAD_IDX.eq(Const(0, DTYPES["i32"])),
                                     [irc.ClusterArrive()])]))


def test_cluster_rank_formula():
    # PTX: %cluster_ctarank = x % cx + (y % cy) cx + (z % cz) cx cy
    assert irc.cta_rank((2, 2, 1), 3, 1, 0) == 1 + 1 * 2
    assert irc.cta_rank((2, 1, 2), 4, 0, 3) == 0 + 1 * 2
    assert irc.cluster_size((2, 2, 2)) == 8


# ------------------------------------------------------------------------------- plan
def test_plan_records_choice_and_fallbacks():
    (k,) = _lower(_mm(256, 128, 128))[1]
    cl = k.meta.plan.detail("cluster")
    assert cl.ctas == 2 and k.cluster == (2, 1, 1) and "multicast" in cl.reason
    assert k.meta.plan.detail("group_m") % 2 == 0
    # odd row-tile count, one row tile, a spec without clusters: no cluster, reason kept
    no = dataclasses.replace(H100, capabilities=H100.capabilities - {"clusters"})
    for g, spec, why in ((_mm(384, 128, 128), H100, "even count"),
                         (_mm(64, 128, 128), H100, "no peer"),
                         (_mm(256, 128, 128), no, "no thread-block")):
        (k,) = _lower(g, spec)[1]
        cl = k.meta.plan.detail("cluster")
        assert cl.ctas == 1 and why in cl.reason and k.cluster == (1, 1, 1)
        assert not any(isinstance(s, irc.CLUSTER_STMTS) for s in walk_stmts(k.body))
    assert cluster_choice(H100, 1000, 128, 4).ctas == 2     # 8 row tiles, the last partial


def test_cost_model_counts_b_once_per_cluster():
    g = _mm(1024, 512, 1024)
    grp, (k,) = _lower(g)
    p = k.meta.plan
    no = dataclasses.replace(H100, capabilities=H100.capabilities - {"clusters"})
    (k0,) = _lower(g, no)[1]
    b_with = next(x for x in p.loads if x.value == "w")
    b_without = next(x for x in k0.meta.plan.loads if x.value == "w")
    assert b_with.issued_bytes * 2 == b_without.issued_bytes


# ------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("m,k,n,tb,batch,dt,epi", [
    (256, 320, 136, True, 0, bf16, False),    # K-major B, N edge, 5 k tiles for 4 stages
    (256, 320, 128, False, 2, bf16, False),   # N-major B (two 64-column boxes), batch
    (200, 136, 72, True, 0, f16, True),       # partial row tile in the second CTA, epilogue
    (256, 64, 64, False, 0, bf16, False),     # one 64-column box split by k rows
])
def test_clustered_gemm_matches_reference(m, k, n, tb, batch, dt, epi):
    g = _mm(m, k, n, tb, batch, dt, epi)
    (kern,), r = _run(g)
    assert kern.cluster == (2, 1, 1)
    assert r.report["ok"], r.report
    mc = [s for s in walk_stmts(kern.body) if isinstance(s, ira.TmaLoad) and s.multicast]
    assert mc and all(s.multicast == 0b11 for s in mc)
    assert any(isinstance(s, ira.MbarrierArrive) and s.cta is not None
               for s in walk_stmts(kern.body))


def test_multicast_halves_global_reads_of_b():
    g = _mm(256, 256, 128)
    grp, (k,) = _lower(g)
    no = dataclasses.replace(H100, capabilities=H100.capabilities - {"clusters"})
    (k0,) = _lower(g, no)[1]
    s1 = simulate(k, _args(g, k), H100)
    s0 = simulate(k0, _args(g, k0), H100)
    b_bytes = 128 * 256 * 2
    # two row tiles: B read twice without the cluster, once with it (A is unchanged)
    assert s0.global_bytes_read - s1.global_bytes_read == b_bytes
    assert k.meta.plan.issued_bytes - k.meta.plan.written_bytes == s1.global_bytes_read


def _ffn():
    b = GraphBuilder("ffn")   # RMSNorm prologue + dual GEMM (gate/up, SwiGLU)
    x = b.input("x", bf16, (256, 128))
    h = b.op("rms_norm", x, b.input("nw", bf16, (128,)), eps=1e-5)
    gate = b.op("matmul", h, b.input("wg", bf16, (128, 128)), transpose_b=True)
    up = b.op("matmul", h, b.input("wu", bf16, (128, 128)), transpose_b=True)
    b.output(b.op("mul", b.op("silu", gate), up))
    return b.build()


def _qkv():
    b = GraphBuilder("qkv")   # RMSNorm prologue + siblings of different N (3 segments)
    x = b.input("x", bf16, (256, 128))
    h = b.op("rms_norm", x, b.input("nw", bf16, (128,)), eps=1e-5)
    for nm, n in (("q", 128), ("k", 64), ("v", 64)):
        b.output(b.op("matmul", h, b.input("w" + nm, bf16, (n, 128)), transpose_b=True))
    return b.build()


@pytest.mark.parametrize("build,what", [(_ffn, "dual"), (_qkv, "segments")])
def test_prologue_dual_and_siblings_keep_clusters(build, what):
    from hal.fusion import plan as fuse

    g = build()
    fused = fuse(g, H100)
    mms = [k for grp in fused.groups for k in lower_group(grp, H100)
           if k.meta.plan is not None and k.meta.plan.strategy == "wgmma"]
    assert len(mms) == 1 and mms[0].cluster == (2, 1, 1)
    p = mms[0].meta.plan
    assert "A's prologue rewritten" in p.detail("matmul_path")[1]
    assert (p.detail("contractions") == 2) if what == "dual" else \
        (p.detail("column_segments") == (128, 64, 64))
    r = CpuSimBackend().run_graph(g, random_inputs(g, 2), H100)
    assert r.report["ok"], r.report


# ------------------------------------------------------------------------------- races
def _fails(k, g, kind, match):
    with pytest.raises(SimulationError, match=match) as e:
        simulate(k, _args(g, k), H100)
    assert e.value.kind == kind if hasattr(e.value, "kind") else kind in str(e.value)


def test_missing_remote_release_is_a_race():
    g = _mm(256, 320, 128)
    opts = LoweringOptions.planting("cluster_local_release")
    (k,) = _lower(g, options=opts)[1]
    with pytest.raises(SimulationError, match=r"race.*CTA rank \d.*TMA multicast lands in "
                                              r"shared b_tile.*pipeline stage 0.*phase 0"):
        simulate(k, _args(g, k), H100, options=opts)
    (k,) = _lower(g)[1]       # with the remote release: clean
    simulate(k, _args(g, k), H100)


def test_wrong_multicast_mask_deadlocks_the_peer():
    g = _mm(256, 128, 128)
    opts = LoweringOptions.planting("cluster_multicast_mask")
    (k,) = _lower(g, options=opts)[1]
    with pytest.raises(SimulationError, match="deadlock.*full_bar.*transaction bytes"):
        simulate(k, _args(g, k), H100, options=opts)


def test_exit_without_cluster_barrier_is_a_race():
    g = _mm(256, 128, 128)
    (k,) = _lower(g)[1]
    assert isinstance(k.body[-2], irc.ClusterArrive) and isinstance(k.body[-1], irc.ClusterWait)
    cut = dataclasses.replace(k, body=k.body[:-2])
    with pytest.raises(SimulationError, match=r"race.*exits while the remote arrive of CTA "
                                              r"rank \d.*empty_bar"):
        simulate(cut, _args(g, cut), H100)


def test_multicast_before_peer_init_is_a_race():
    g = _mm(256, 128, 128)
    (k,) = _lower(g)[1]
    i = next(i for i, s in enumerate(k.body) if isinstance(s, irc.ClusterArrive))
    cut = dataclasses.replace(k, body=[*k.body[:i], Barrier(), *k.body[i + 2:]])
    with pytest.raises(SimulationError, match="race.*TMA multicast reaches mbarrier full_bar"
                                              ".*no cluster barrier since"):
        simulate(cut, _args(g, cut), H100)


# ------------------------------------------------------------------------------- rendering
def test_cuda_source_spells_the_cluster_ptx():
    (k,) = _lower(_mm(256, 128, 128, tb=False))[1]
    src = render_cuda(k, H100)
    for ptx in ("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx"
                "::bytes.multicast::cluster", "mapa.shared::cluster.u32",
                "mbarrier.arrive.shared::cluster.b64", "barrier.cluster.arrive.release.aligned",
                "barrier.cluster.wait.acquire.aligned", "fence.mbarrier_init.release.cluster",
                "%%cluster_ctarank", "(unsigned short)0x3"):
        assert ptx in src, ptx
    assert "cluster=(2, 1, 1)" in src


def test_sass_has_multicast_utmaldg_and_cluster_barrier(tmp_path):
    import shutil

    from hal.render.disasm import count_instructions, cuobjdump_path

    if not shutil.which("nvcc") or cuobjdump_path() is None:
        pytest.skip("nvcc or cuobjdump (nvidia-cuda-cuobjdump wheel) not installed")
    (k,) = _lower(_mm(4096, 4096, 4096))[1]
    r = count_instructions(render_cuda(k, H100), "cuda", "sm_90a", name="cluster",
                           out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.forms.get("UTMALDG.3D.MULTICAST", 0) == 1, r.forms    # B half, multicast
    assert r.forms.get("UTMALDG.2D", 0) == 1, r.forms              # A, this CTA only
    assert r.forms.get("HGMMA.64x128x16.F32.BF16", 0) == 4, r.forms
    assert r.forms.get("SYNCS.ARRIVE.TRANS64.RED.A1T0", 0) == 1, r.forms   # remote release
    sass = r.listing.read_text()
    assert sass.count("UCGABAR_ARV") == 2 and sass.count("UCGABAR_WAIT") == 2   # start, end
    # the remote release carries no GPU-scope fence in the consumer loop
    lines = sass.splitlines()
    at = next(i for i, ln in enumerate(lines) if "SYNCS.ARRIVE.TRANS64.RED" in ln)
    assert not any("MEMBAR.ALL.GPU" in ln for ln in lines[at - 8:at])


def test_fake_driver_launches_with_the_cluster_attribute():
    """CudaDriver launches a clustered kernel through cuLaunchKernelEx with the cluster
    dimension; the fake driver runs it on cpu_sim only when the attribute matches."""
    from fake_cuda import FakeCuda, FakeCudaDriver
    from test_wgmma_render import _FakeBackend

    from hal.dtypes import cast

    g = _mm(256, 128, 64, tb=True)
    (k,) = _lower(g)[1]
    fake = FakeCuda(H100)
    be = _FakeBackend(FakeCudaDriver(fake))
    rng = np.random.default_rng(0)
    x = np.asarray(cast(rng.standard_normal((256, 128)), bf16))
    w = np.asarray(cast(rng.standard_normal((64, 128)), bf16))
    ck = be.compile(k, H100)
    bufs = []
    for p in k.params:
        b = be.allocate(p.numel * p.dtype.itemsize, p.dtype, p.shape)
        if p.readonly:
            be.copy_in(b, x if k.meta.buffers[p.name] == "x" else w)
        bufs.append(b)
    be.launch(ck, bufs, k.grid, (k.block,))
    be.synchronize()
    assert not fake.faults, fake.faults
    assert [c[0] for c in fake.calls].count("cuLaunchKernelEx") == 1
    assert fake.launches[-1]["cluster"] == (2, 1, 1)
    y = be.copy_out(bufs[-1]).astype(np.float32).reshape(256, 64)
    np.testing.assert_allclose(y, x.astype(np.float32) @ w.astype(np.float32).T, rtol=2e-2,
                               atol=5e-2)


def test_waves_and_samples_hold_whole_clusters():
    """A wave never splits a cluster (its CTAs write each other's shared memory): a one-block
    wave limit still runs pairs, and a sampled block brings its peer along."""
    g = _mm(512, 128, 128)
    (k,) = _lower(g)[1]
    assert k.grid == (8, 1, 1)
    s = simulate(k, _args(g, k), H100, max_lanes=k.block)
    assert s.waves == 4
    s = simulate(k, _args(g, k), H100, blocks=np.array([3]))
    assert s.waves == 1 and s.lanes_per_wave == 2 * k.block


def test_sampled_parts_run_whole_clusters_once():
    """Sampled simulation (issue 19's simulate_parts) widens each part's blocks to whole
    clusters, so a CTA's multicast peer runs with it, and runs a cluster once even when
    two parts name blocks of it: the outputs equal the whole grid's, and the later part
    counts only the clusters that were new to it."""
    from hal.backends.cpu_sim.simulator import simulate_parts

    g = _mm(512, 128, 128)
    _grp, (k,) = _lower(g)
    assert k.cluster == (2, 1, 1) and k.num_blocks == 8
    full = _args(g, k)
    simulate(k, full, H100)
    part = _args(g, k)
    # part 0: clusters {0, 1} and {2, 3}; part 1: block 3's cluster is part 0's, so
    # {4, 5} and {6, 7} only
    s0, s1 = simulate_parts(k, part, H100, [np.array([0, 2]), np.array([3, 4, 5, 6, 7])])
    out = [p.name for p in k.params if hasattr(p, "numel") and not p.readonly]
    assert out and all(np.array_equal(full[o], part[o]) for o in out)
    assert s0.global_bytes_read == s1.global_bytes_read > 0   # two clusters each


def test_clustered_launch_is_sampled_in_whole_clusters_with_exact_counters():
    """A sampled run of a clustered GEMM picks whole clusters (a boundary block's peer is
    part of its boundary cluster, the interior sample is of clusters) and reports every
    block it simulated; its extrapolated counters equal the exact run's. Choosing blocks
    and widening them to clusters afterwards simulated about twice the stated fraction
    and counted each peer as a further sampled block: every counter came out ~2x."""
    from hal.backends.cpu_sim.sampled import SampleOptions, choose_blocks, cluster_unit

    g = _mm(2048, 256, 256, tb=False)
    _grp, (k,) = _lower(g)
    assert k.cluster == (2, 1, 1) and cluster_unit(k) == 2
    boundary, sample = choose_blocks(tuple(k.grid), SampleOptions(0.2, seed=1), unit=2)
    for ids in (boundary, sample):
        assert ids.size and np.array_equal(ids[0::2] + 1, ids[1::2]) and not (ids[0::2] % 2).any()
    assert {0, 1, k.num_blocks - 2, k.num_blocks - 1} == set(boundary.tolist())
    interior = k.num_blocks // 2 - 2
    assert sample.size == 2 * int(np.ceil(0.2 * interior))
    # unit 1 keeps the block-level choice it always made
    b1, s1 = choose_blocks(tuple(k.grid), SampleOptions(0.2, seed=1))
    assert b1.tolist() == [0, k.num_blocks - 1] and s1.size == int(np.ceil(0.2 * (k.num_blocks - 2)))

    inputs = random_inputs(g, seed=0)
    exact = CpuSimBackend().run_graph(g, inputs, H100)
    sampled = CpuSimBackend().run_graph(g, inputs, H100, sample=SampleOptions(0.2, seed=1))
    (e,), (s,) = exact.stats, sampled.stats
    info = s["sample"]
    ids = info["simulated_block_ids"]
    assert info["blocks_simulated"] == len(ids) == boundary.size + sample.size
    assert sorted(ids) == sorted(boundary.tolist() + sample.tolist())
    assert info["fraction"] == len(ids) / k.num_blocks and info["counter_rel_error"] == 0.0
    for c in ("global_bytes_read", "global_bytes_written", "shared_bytes_read",
              "shared_bytes_written", "barriers", "flops"):
        assert s[c] == e[c], (c, s[c], e[c])
        assert e[c] > 0 or c == "barriers", c
    assert s["matrix_flops"] == e["matrix_flops"]
    assert exact.report["ok"] and sampled.report["ok"] and info["ok"]
    y = g.outputs[0].name   # the rest of the blocks come from the f32 reference
    np.testing.assert_allclose(sampled.outputs[y].astype(np.float32),
                               exact.outputs[y].astype(np.float32), rtol=1e-2, atol=1e-2)
