"""Attention tile staging (hal.lowering.attention_loads): Q, K and V rows are copied by
16-byte vectors where the head dim allows, by narrower vectors for the tail widths, element
by element when the dim is odd or the operand has a prologue; the simulated kernels still
match the reference, and the compiled text holds the vector instructions (LDG.E.128 on
sm_90a, global_load_dwordx4 on gfx942)."""

from __future__ import annotations

import shutil

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cuda.render import render_cuda
from hal.backends.rocm.render import render_hip
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion.plan import plan
from hal.ir import GraphBuilder
from hal.kernel.ir import VecCopy, walk_stmts
from hal.lowering import lower_group
from hal.reference import random_inputs
from hal.render.disasm import count_instructions, cuobjdump_path


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def sdpa(dt: str, q, kv, causal: bool = True):
    b = GraphBuilder("att")
    d = dtype(dt)
    b.output(b.op("scaled_dot_product_attention", b.input("q", d, q), b.input("k", d, kv),
                  b.input("v", d, kv), causal=causal))
    return b.build()


def kernels(g, device):
    spec = load_spec(device)
    group = next(x for x in plan(g, spec).groups if x.kind == "attention")
    return lower_group(group, spec), spec


def widths(ks) -> dict[str, set[int]]:
    """Vector widths of the copies per source buffer (q, k, v)."""
    out: dict[str, set[int]] = {}
    for k in ks:
        for s in walk_stmts(k.body):
            if isinstance(s, VecCopy):
                out.setdefault(s.src, set()).add(s.width)
    return out


@pytest.mark.parametrize("device", ["h100-sxm", "mi300x"])
@pytest.mark.parametrize("dt,d,want", [
    ("bf16", 64, 8),     # 16 bytes
    ("bf16", 20, 4),     # the tail width: 8 bytes (20 is no multiple of 8 elements)
    ("f32", 6, 2),       # 8 bytes of f32
    ("bf16", 17, None),  # odd: element by element
])
def test_vector_width_follows_the_head_dim(device, dt, d, want):
    # 62 query rows per kv head: the mma.sync kernel on h100-sxm too (the Hopper kernel,
    # hal.lowering.attention_wgmma, takes 64 rows and more and loads its tiles by TMA)
    g = sdpa(dt, (1, 4, 31, d), (1, 2, 70, d))
    ks, spec = kernels(g, device)
    got = widths(ks)
    if want is None:
        assert got == {}
    else:
        assert got == {"q": {want}, "k": {want}, "v": {want}}, got
    r = CpuSimBackend().run_graph(g, random_inputs(g, 11), spec)
    assert r.report["ok"], r.report


def test_an_operand_with_a_prologue_is_loaded_element_by_element():
    """k = k_in * 2 inside the group: K's tile evaluates it per element (no vector copy),
    Q and V still get vectors."""
    b = GraphBuilder("att")
    bf = dtype("bf16")
    q, k, v = b.input("q", bf, (1, 2, 40, 32)), b.input("k", bf, (1, 2, 40, 32)), \
        b.input("v", bf, (1, 2, 40, 32))
    two = b.op("broadcast_to", b.op("full", shape=(), value=2.0, dtype=bf), shape=(1, 2, 40, 32))
    b.output(b.op("scaled_dot_product_attention", q, b.op("mul", k, two), v, causal=True))
    g = b.build()
    ks, spec = kernels(g, "h100-sxm")
    got = widths(ks)
    assert "k" not in got and got.get("v") == {8}, got
    r = CpuSimBackend().run_graph(g, random_inputs(g, 2), spec)
    assert r.report["ok"], r.report


needs_nvcc = pytest.mark.skipif(not shutil.which("nvcc") or cuobjdump_path() is None,
                                reason="needs nvcc and cuobjdump")


@needs_nvcc
@pytest.mark.parametrize("dt,device", [("bf16", "h100-sxm"), ("f32", "h100-sxm")])
def test_sm90a_sass_loads_tiles_by_128_bit_vectors(tmp_path, dt, device):
    # head dim 32: the mma.sync kernel (64 and more take wgmma + TMA on sm_90a)
    (k,), spec = kernels(sdpa(dt, (1, 8, 256, 32), (1, 2, 256, 32)), device)
    r = count_instructions(render_cuda(k, spec), "cuda", "sm_90a", out_dir=tmp_path)
    assert not isinstance(r, str), r
    text = r.listing.read_text()
    assert "LDG.E.128" in text and "STS.128" in text
    assert "LDG.E.U16" not in text   # no scalar 16-bit global loads of Q, K or V left


@pytest.mark.skipif(not shutil.which("clang-19"), reason="gfx942 needs clang-19")
def test_gfx942_assembly_loads_tiles_by_dwordx4(tmp_path):
    (k,), spec = kernels(sdpa("bf16", (1, 8, 256, 64), (1, 2, 256, 64)), "mi300x")
    r = count_instructions(render_hip(k, spec), "hip", "gfx942", out_dir=tmp_path)
    assert not isinstance(r, str), r
    text = r.listing.read_text()
    assert "global_load_dwordx4" in text and "global_load_ushort" not in text
