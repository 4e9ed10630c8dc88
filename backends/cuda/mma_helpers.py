"""CUDA device helpers for matrix units and pipelines: inline PTX, one function each.

Names and signatures are hal.kernel.mma's (shared with the host shim, which defines the
same names when HAL_HOST_SHIM is set). Fragments are passed as pointers to 16-byte
aligned per-thread arrays; two 16-bit (or four 8-bit) elements per 32-bit register, the
lower-numbered element in the low half, as PTX numbers them.
"""

from __future__ import annotations

from hal.render.helpers import vec_copy_helper

_MMA = """HAL_FN void {name}(float* d, const {t}* a, const {t}* b, const float* c) {{
  const unsigned* A = reinterpret_cast<const unsigned*>(a);
  const unsigned* B = reinterpret_cast<const unsigned*>(b);
  asm volatile("mma.sync.aligned.{shape}.row.col.f32.{ptx}.{ptx}.f32 "
               "{{%0,%1,%2,%3}}, {{%4,%5,%6,%7}}, {{%8,%9}}, {{%10,%11,%12,%13}};\\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "r"(B[0]), "r"(B[1]),
                 "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}}
"""


_MMA_TF32 = """HAL_FN void hal_mma_m16n8k8_tf32_f32(float* d, const float* a, const float* b,
                                         const float* c) {
  unsigned A0, A1, A2, A3, B0, B1;   // cvt.rna: round to nearest, ties away (hal's cpu_sim)
  asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(A0) : "f"(a[0]));
  asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(A1) : "f"(a[1]));
  asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(A2) : "f"(a[2]));
  asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(A3) : "f"(a[3]));
  asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(B0) : "f"(b[0]));
  asm("cvt.rna.tf32.f32 %0, %1;\\n" : "=r"(B1) : "f"(b[1]));
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(A0), "r"(A1), "r"(A2), "r"(A3), "r"(B0), "r"(B1),
                 "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
"""


def _ldmatrix(count: int, trans: bool) -> str:
    regs = ",".join(f"%{i}" for i in range(count))
    outs = ", ".join(f'"=r"(r[{i}])' for i in range(count))
    name = f"hal_ldmatrix_x{count}{'_trans' if trans else ''}"
    return (f"HAL_FN void {name}(void* dst, const void* smem) {{\n"
            f"  unsigned* r = reinterpret_cast<unsigned*>(dst);\n"
            f"  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));\n"
            f'  asm volatile("ldmatrix.sync.aligned.m8n8.x{count}{".trans" if trans else ""}'
            f'.shared.b16 {{{regs}}}, [%{count}];\\n"\n'
            f'               : {outs} : "r"(s) : "memory");\n}}\n')


CUDA_MATRIX_HELPERS: dict[str, str] = {
    "hal_mma_m16n8k16_bf16_f32": _MMA.format(name="hal_mma_m16n8k16_bf16_f32",
                                             t="__nv_bfloat16", shape="m16n8k16", ptx="bf16"),
    "hal_mma_m16n8k16_f16_f32": _MMA.format(name="hal_mma_m16n8k16_f16_f32", t="__half",
                                            shape="m16n8k16", ptx="f16"),
    "hal_mma_m16n8k32_e4m3_f32": _MMA.format(name="hal_mma_m16n8k32_e4m3_f32",
                                             t="__nv_fp8_storage_t", shape="m16n8k32",
                                             ptx="e4m3"),
    "hal_mma_m16n8k32_e5m2_f32": _MMA.format(name="hal_mma_m16n8k32_e5m2_f32",
                                             t="__nv_fp8_storage_t", shape="m16n8k32",
                                             ptx="e5m2"),
    "hal_mma_m16n8k8_tf32_f32": _MMA_TF32,
    **{f"hal_ldmatrix_x{c}{'_trans' if t else ''}": _ldmatrix(c, t)
       for c in (1, 2, 4) for t in (False, True)},
    "hal_cp_async_16": (
        "HAL_FN void hal_cp_async_16(void* smem, const void* gmem, bool full) {\n"
        "  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));\n"
        '  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n"\n'
        '               :: "r"(s), "l"(gmem), "r"(full ? 16 : 0) : "memory");\n}\n'),
    "hal_cp_async_commit": ('HAL_FN void hal_cp_async_commit() '
                            '{ asm volatile("cp.async.commit_group;\\n" ::: "memory"); }\n'),
    "hal_cp_async_wait": ('template <int N> HAL_FN void hal_cp_async_wait() '
                          '{ asm volatile("cp.async.wait_group %0;\\n" :: "n"(N) : "memory"); }\n'),
    **{f"hal_vec_copy_{n}": vec_copy_helper(n) for n in (16, 8, 4, 2)},
}
