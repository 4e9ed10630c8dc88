"""HIP device helpers for matrix units: `__builtin_amdgcn_mfma_*`, one function each.

Names and signatures are hal.kernel.mma's (shared with the host shim, which defines the
same names when HAL_HOST_SHIM is set). A lane's A/B fragment (four 16-bit elements) is
one 64-bit vector operand; C/D are the 16 (32x32) or 4 (16x16) f32 accumulators of the
lane. The gfx90a `_1k` bf16 builtins are also gfx942's v_mfma_f32_*_bf16.
"""

from __future__ import annotations

from hal.render.helpers import vec_copy_helper

PREAMBLE = """typedef short hal_short4 __attribute__((ext_vector_type(4)));
typedef _Float16 hal_half4 __attribute__((ext_vector_type(4)));
typedef float hal_floatx4 __attribute__((ext_vector_type(4)));
typedef float hal_floatx16 __attribute__((ext_vector_type(16)));
"""

_MFMA = """HAL_FN void {name}(float* d, const {t}* a, const {t}* b, const float* c) {{
  {v} A = *reinterpret_cast<const {v}*>(a);
  {v} B = *reinterpret_cast<const {v}*>(b);
  hal_floatx{n} C;
  for (int i = 0; i < {n}; ++i) C[i] = c[i];
  hal_floatx{n} D = {builtin}(A, B, C, 0, 0, 0);
  for (int i = 0; i < {n}; ++i) d[i] = D[i];
}}
"""


def _mfma(name: str, t: str, v: str, n: int, builtin: str) -> str:
    return _MFMA.format(name=name, t=t, v=v, n=n, builtin=builtin)


HIP_MATRIX_HELPERS: dict[str, str] = {
    "hal_mfma_f32_32x32x8_bf16": _mfma("hal_mfma_f32_32x32x8_bf16", "hip_bfloat16",
                                       "hal_short4", 16,
                                       "__builtin_amdgcn_mfma_f32_32x32x8bf16_1k"),
    "hal_mfma_f32_16x16x16_bf16": _mfma("hal_mfma_f32_16x16x16_bf16", "hip_bfloat16",
                                        "hal_short4", 4,
                                        "__builtin_amdgcn_mfma_f32_16x16x16bf16_1k"),
    "hal_mfma_f32_32x32x8_f16": _mfma("hal_mfma_f32_32x32x8_f16", "__half", "hal_half4", 16,
                                      "__builtin_amdgcn_mfma_f32_32x32x8f16"),
    "hal_mfma_f32_16x16x16_f16": _mfma("hal_mfma_f32_16x16x16_f16", "__half", "hal_half4", 4,
                                       "__builtin_amdgcn_mfma_f32_16x16x16f16"),
    **{f"hal_vec_copy_{n}": vec_copy_helper(n) for n in (16, 8, 4, 2)},
}
