"""The Hopper kernel as CUDA: inline PTX for wgmma, TMA, mbarriers and fences; nvcc -arch
sm_90a + cuobjdump -sass show HGMMA and UTMALDG (skipped only without nvcc/cuobjdump);
NVRTC compiles it; the CUDA runtime path encodes the tensor maps with cuTensorMapEncodeTiled
and launches them (the real CudaDriver over tests/fake_cuda.py, which checks the encode
call's documented rules and runs the kernel on cpu_sim)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fake_cuda import FakeCuda, FakeCudaDriver

from hal.backend import Availability
from hal.backends.cuda.backend import CudaBackend
from hal.backends.cuda.render import render_cuda
from hal.backends.rocm.render import HipRenderer
from hal.devices.loader import load_spec
from hal.dtypes import bf16, cast
from hal.errors import UnsupportedError
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.render.disasm import count_instructions, cuobjdump_path

H100 = load_spec("h100-sxm")


def _kernel(m=256, k=256, n=256, tb=True, spec=H100):
    b = GraphBuilder("mm")
    x = b.input("x", bf16, (m, k))
    w = b.input("w", bf16, (n, k) if tb else (k, n))
    b.output(b.op("matmul", x, w, transpose_b=tb))
    g = b.build()
    (kern,) = lower_group(make_group(g, g.nodes, "g"), spec)
    assert kern.meta.plan.strategy == "wgmma"
    return g, kern


@pytest.mark.parametrize("tb", [True, False])
def test_source_spells_the_asynchronous_ptx(tb):
    _g, kern = _kernel(2048, 256, 2048, tb=tb)    # 256 tiles of 128 x 128
    src = render_cuda(kern, H100)
    for ptx in ("wgmma.fence.sync.aligned", "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16"
                ".bf16", "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned",
                "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx",
                "mbarrier.init.shared::cta.b64", "mbarrier.arrive.expect_tx.shared::cta.b64",
                "mbarrier.try_wait.parity.shared::cta.b64", "fence.proxy.async.shared::cta",
                "setmaxnreg.dec.sync.aligned.u32", "setmaxnreg.inc.sync.aligned.u32"):
        assert ptx in src, ptx
    assert src.count("const __grid_constant__ hal_tensor_map") == 2
    assert "__align__(1024) unsigned char hal_smem[]" in src
    # the trans-b immediate: 1 for an N-major B ([K, N] row-major weight)
    assert ("0, 1;" in src) == (not tb)


def test_other_renderers_refuse_hopper_nodes_clearly():
    _g, kern = _kernel()
    with pytest.raises(UnsupportedError, match="hip renderer"):
        HipRenderer().render(kern, H100)


@pytest.mark.skipif(not shutil.which("nvcc") or cuobjdump_path() is None,
                    reason="nvcc or cuobjdump (nvidia-cuda-cuobjdump wheel) not installed")
@pytest.mark.parametrize("tb", [True, False])
def test_sass_has_hgmma_and_utmaldg(tb, tmp_path):
    _g, kern = _kernel(4096, 4096, 4096, tb)
    r = count_instructions(render_cuda(kern, H100), "cuda", "sm_90a", name="wgmma",
                           out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.counts.get("HGMMA", 0) == 4, r.forms        # BK 64 = 4 x k16 per stage
    assert r.forms.get("HGMMA.64x128x16.F32.BF16", 0) == 4, r.forms
    assert r.counts.get("UTMALDG", 0) >= 2, r.forms      # A and B boxes
    assert r.counts.get("SYNCS", 0) > 0, r.forms         # mbarrier wait / arrive
    assert r.counts.get("HMMA", 0) == 0, r.forms
    # the roles are separate code regions: ptxas applies the register reallocation
    assert r.forms.get("USETMAXREG.DEALLOC.CTAPOOL", 0) == 1, r.forms
    assert r.forms.get("USETMAXREG.TRY_ALLOC.CTAPOOL", 0) == 1, r.forms


def test_nvrtc_compiles_the_hopper_kernel():
    from hal.backends.cuda.compiler import NvrtcOptions, compile_nvrtc

    try:
        import cuda.bindings.nvrtc  # noqa: F401
    except ImportError:
        pytest.skip("cuda-python NVRTC not installed")
    _g, kern = _kernel()
    cubin, log = compile_nvrtc(render_cuda(kern, H100), NvrtcOptions(arch="sm_90a"),
                               name="wgmma")
    assert cubin


class _FakeBackend(CudaBackend):
    def __init__(self, driver):
        super().__init__()
        self._driver = driver
        self._availability = Availability(True, "FakeCuda")


@pytest.mark.parametrize("tb", [True, False])
def test_runtime_encodes_tensor_maps_and_launches(tb, monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")
    g, kern = _kernel(200, 136, 72, tb)
    fake = FakeCuda(H100)
    be = _FakeBackend(FakeCudaDriver(fake))
    rng = np.random.default_rng(0)
    x = np.asarray(cast(rng.standard_normal((200, 136)), bf16))
    w = np.asarray(cast(rng.standard_normal((72, 136) if tb else (136, 72)), bf16))
    ck = be.compile(kern, H100)
    bufs = []
    for p in kern.params:
        b = be.allocate(p.numel * p.dtype.itemsize, p.dtype, p.shape)
        if p.readonly:
            be.copy_in(b, x if kern.meta.buffers[p.name] == "x" else w)
        bufs.append(b)
    be.launch(ck, bufs, kern.grid, (kern.block,))
    be.synchronize()
    assert not fake.faults, fake.faults
    encodes = [c for c in fake.calls if c[0] == "cuTensorMapEncodeTiled"]
    assert len(encodes) == 2
    # (name, thread, dtype, rank, address, dims, strides, box, element strides, interleave,
    #  swizzle, L2 promotion, OOB fill)
    x_buf = bufs[[p.name for p in kern.params].index(kern.tensor_maps[0].buffer)]
    a_map = next(c for c in encodes if c[4] == x_buf.handle)
    # A [200, 136] unbatched: a 2-d map (hal.lowering.tma_views drops size-1 batch axes)
    assert a_map[2:4] == ("BFLOAT16", 2) and a_map[5] == [136, 200]
    assert a_map[7] == [64, 128] and a_map[10] == "128B" and a_map[12] == "NONE"
    y = be.copy_out(bufs[-1]).astype(np.float32).reshape(200, 72)
    ref = x.astype(np.float32) @ (w.astype(np.float32).T if tb else w.astype(np.float32))
    np.testing.assert_allclose(y, ref, rtol=2e-2, atol=5e-2)


def test_encode_refuses_a_misaligned_buffer():
    from hal.backends.cuda.tensor_maps import encode_tiled
    from hal.errors import DeviceError

    _g, kern = _kernel()
    with pytest.raises(DeviceError, match="16-byte aligned"):
        encode_tiled(FakeCuda(H100), kern.tensor_maps[0], 0x1008)


@pytest.mark.skipif(not shutil.which("nvcc") or cuobjdump_path() is None,
                    reason="nvcc or cuobjdump (nvidia-cuda-cuobjdump wheel) not installed")
def test_fp8_sass_has_qgmma(tmp_path):
    from hal.dtypes import f8e4m3fn

    b = GraphBuilder("mm8")
    x = b.input("x", f8e4m3fn, (4096, 4096))
    w = b.input("w", f8e4m3fn, (4096, 4096))
    b.output(b.op("matmul", x, w, transpose_b=True, out_dtype="bf16"))
    g = b.build()
    (kern,) = lower_group(make_group(g, g.nodes, "g"), H100)
    assert kern.meta.plan.strategy == "wgmma"
    r = count_instructions(render_cuda(kern, H100), "cuda", "sm_90a", name="wgmma8",
                           out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.forms.get("QGMMA.64x128x32.F32.E4M3.E4M3", 0) == 4, r.forms
    assert r.counts.get("UTMALDG", 0) >= 2, r.forms


@pytest.mark.skipif(not shutil.which("nvcc") or cuobjdump_path() is None,
                    reason="nvcc or cuobjdump (nvidia-cuda-cuobjdump wheel) not installed")
def test_sass_of_the_norm_prologue_kernel(tmp_path):
    """The RMSNorm prologue on the Hopper GEMM: the consumers' shared rewrite (16-byte
    LDS.128/STS.128), the proxy fence (FENCE.VIEW.ASYNC.S) and the ready barrier sit between
    UTMALDG and HGMMA."""
    from hal.ops.decompose import decompose_graph

    b = GraphBuilder("nmm")
    x = b.input("x", bf16, (512, 512))
    h = b.op("rms_norm", x, b.input("nw", bf16, (512,)))
    b.output(b.op("matmul", h, b.input("w", bf16, (512, 512)), transpose_b=True))
    g = decompose_graph(b.build())
    (kern,) = lower_group(make_group(g, g.nodes, "g"), H100)
    assert "prologue" in kern.meta.plan.detail("matmul_path")[1]
    src = render_cuda(kern, H100)
    assert "fence.proxy.async.shared::cta" in src
    assert src.count("hal_fence_proxy_async();") >= 2    # after the inits, per k tile
    r = count_instructions(src, "cuda", "sm_90a", name="wgmma_prologue", out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.counts.get("HGMMA", 0) == 4, r.forms      # BN 64 here: 64 tiles for 132 units
    assert r.counts.get("UTMALDG", 0) >= 2 and r.counts.get("HMMA", 0) == 0, r.forms
    sass = r.listing.read_text()
    assert sass.count("FENCE.VIEW.ASYNC.S") >= 2   # fence.proxy.async
    # the rewrite moves whole 16-byte chunks: 4 per thread and k tile (unrolled), the norm
    # weight as 16-byte global loads, no element-wide shared access left
    assert sass.count("LDS.128") == 4 and sass.count("STS.128") == 4, r.forms
    assert sass.count("LDG.E.128") >= 4, r.forms
    assert "LDS.U16" not in sass and "STS.U16" not in sass, r.forms
