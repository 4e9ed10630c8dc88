"""The C-style renderer: every primitive op's kernel and the fused examples render for CUDA
and HIP; the text follows hal's scalar rules (spellings from the op table, casts, shuffles)."""

from __future__ import annotations

import pytest

from hal.backends.cuda.render import CudaRenderer, render_cuda
from hal.backends.rocm.render import HipRenderer, render_hip
from hal.devices.loader import load_spec
from hal.dtypes import DTYPES, bf16, f8e4m3fn, f16, f32, f64, i32, i64
from hal.fusion import plan
from hal.ir import GraphBuilder
from hal.ir.text import load_graph
from hal.kernel.ir import Binary, Cast, Const, Kernel, Param, ScalarParam, SharedBuffer, Unary
from hal.lowering import lower_group
from hal.ops import OPS, Category
from hal.render.cstyle import OP_SPELLINGS
from tests.test_lowering_ops import CASES

EXAMPLES = ["mlp", "tiny_gpt", "gpt_block_d768_s128"]


def primitive_kernels(spec_name: str) -> list[Kernel]:
    spec = load_spec(spec_name)
    out = []
    for op, build in sorted(CASES.items()):
        b = GraphBuilder(op)
        build(b)
        for g in plan(b.build(), spec, fuse=False).groups:
            out += lower_group(g, spec)
    return out


def example_kernels(spec_name: str, fuse: bool = True) -> list[Kernel]:
    spec = load_spec(spec_name)
    out = []
    for name in EXAMPLES:
        g = load_graph(f"examples/{name}.hal")
        for grp in plan(g, spec, fuse=fuse).groups:
            out += lower_group(grp, spec)
    return out


def test_every_elementwise_op_has_a_spelling():
    # Names starting with "_" are test-only ops that other test modules register.
    ew = {n for n, o in OPS.items()
          if o.category is Category.ELEMENTWISE and not n.startswith("_")}
    assert ew - {"select", "cast"} <= set(OP_SPELLINGS)


@pytest.mark.parametrize("render,spec_name", [(render_cuda, "h100-sxm"), (render_hip, "mi300x")])
def test_primitive_and_example_kernels_render(render, spec_name):
    spec = load_spec(spec_name)
    for k in primitive_kernels(spec_name) + example_kernels(spec_name):
        src = render(k, spec)
        assert f" {k.name}(" in src and 'extern "C" __global__' in src
        assert f"__launch_bounds__({k.block})" in src
        assert "// kernel " + k.name in src


def test_comment_block_names_fused_ops_and_plan():
    k = example_kernels("h100-sxm")[0]
    src = render_cuda(k, load_spec("h100-sxm"))
    assert "fused ops" in src and "erf" in src and "plan: strategy=smem_tiled, tiles=bm" in src
    assert "const float* x" in src  # parameter names are the graph's value names


def _scalar_kernel(expr, dtype=f32) -> Kernel:
    from hal.kernel.ir import BufferParam, Store
    return Kernel("k", [BufferParam("out", dtype, (1,), readonly=False),
                        ScalarParam("a", f32), ScalarParam("n", i32)],
                  [Store("out", Const(0, i32), expr)], (1, 1, 1), 32)


@pytest.mark.parametrize("expr,cuda_text", [
    (Binary("maximum", Param("a", f32), Param("a", f32)), "hal_max_f32(a, a)"),
    (Binary("remainder", Param("a", f32), Param("a", f32)), "fmodf(a, a)"),
    (Unary("round", Param("a", f32)), "rintf(a)"),
    (Unary("sigmoid", Param("a", f32)), "(1.0f / (1.0f + expf(-a)))"),
    (Unary("rsqrt", Param("a", f32)), "rsqrtf(a)"),
    (Unary("log1p", Param("a", f32)), "log1pf(a)"),
])
def test_op_spellings(expr, cuda_text):
    assert cuda_text in render_cuda(_scalar_kernel(expr))


def test_integer_division_guarded_and_constant_divisor_plain():
    guarded = render_cuda(_scalar_kernel(Binary("div", Param("n", i32), Param("n", i32)), i32))
    assert "hal_div_i32(n, n)" in guarded and "if (b == 0) return 0;" in guarded
    plain = render_cuda(_scalar_kernel(Binary("div", Param("n", i32), Const(4, i32)), i32))
    assert "(n / 4)" in plain and "hal_div_i32" not in plain


def test_casts_follow_hal_rules():
    to_int = render_cuda(_scalar_kernel(Cast(Param("a", f32), i32), i32))
    assert "hal_f2i_i32(a)" in to_int and "if (v != v) return 0;" in to_int
    cu8 = render_cuda(_scalar_kernel(Cast(Param("a", f32), f8e4m3fn), f8e4m3fn))
    assert "__NV_SATFINITE" in cu8
    hip8 = render_hip(_scalar_kernel(Cast(Param("a", f32), f8e4m3fn), f8e4m3fn))
    assert "hal_f32_to_f8e4m3fn(a)" in hip8 and "satfinite" in hip8
    wide = render_hip(_scalar_kernel(Cast(Param("a", f32), f64), f64))
    assert "((double)a)" in wide


def test_every_cast_pair_renders():
    for r in (CudaRenderer(), HipRenderer()):
        r.render(_scalar_kernel(Const(0, i32), i32))  # sets up helpers
        for src in DTYPES.values():
            for dst in DTYPES.values():
                assert r.cast("x", src, dst)


def test_low_precision_math_computes_in_f32():
    src = render_cuda(_scalar_kernel(Unary("exp", Cast(Param("a", f32), bf16)), bf16))
    assert "__float2bfloat16_rn(expf(__bfloat162float(" in src
    hsrc = render_hip(_scalar_kernel(Binary("add", Cast(Param("a", f32), f16),
                                            Cast(Param("a", f32), f16)), f16))
    assert "__float2half((__half2float(" in hsrc


def test_shuffles_at_the_kernels_width():
    cu = "\n".join(render_cuda(k) for k in primitive_kernels("h100-sxm") if "reduce" in k.name)
    assert "__shfl_xor_sync(0xffffffffu," in cu and ", 32)" in cu
    hip = "\n".join(render_hip(k) for k in primitive_kernels("mi300x") if "reduce" in k.name)
    assert "__shfl_xor(" in hip and ", 64)" in hip


def test_large_shared_memory_is_dynamic_on_cuda():
    k = _scalar_kernel(Const(0.0, f32))
    k.shared = [SharedBuffer("tile", f32, 13000), SharedBuffer("row", f16, 3)]
    src = render_cuda(k)
    assert "extern __shared__ unsigned char hal_smem[];" in src
    assert "(hal_smem + 52000)" in src
    assert CudaRenderer().dynamic_shared_bytes(k) == k.shared_bytes
    assert "__shared__ float tile[13000]" in render_hip(k)


def test_i64_constants_and_keywords():
    k = _scalar_kernel(Cast(Const(-(2**63), i64), f32))
    k.params[1] = ScalarParam("float", f32)
    src = render_cuda(k)
    assert "(-9223372036854775807LL - 1)" in src
