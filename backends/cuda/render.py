"""CUDA C++ from the kernel IR: `CudaRenderer` (data over hal.render.cstyle) and `render_cuda`.

CUDA spells f16/bf16 with cuda_fp16.h / cuda_bf16.h and converts f32 -> fp8 with the
cuda_fp8.h intrinsic (`cvt.rn.satfinite`, hardware on sm_89+, emulated before); fp8 -> f32
uses hal's shared plain-C decoder. Shuffles take the full-warp mask and the width.
"""

from __future__ import annotations

from collections.abc import Sequence

from hal.backends.cuda.cluster_helpers import CLUSTER_HELPERS, ClusterRendering
from hal.backends.cuda.mma_helpers import CUDA_MATRIX_HELPERS
from hal.backends.cuda.wgmma_helpers import HOPPER_HELPERS, PREAMBLE, HopperRendering
from hal.devices.spec import DeviceSpec
from hal.kernel.ir import Kernel
from hal.render.cstyle import CStyleRenderer


class CudaRenderer(ClusterRendering, HopperRendering, CStyleRenderer):
    vendor = "cuda"
    headers = ("cuda_fp16.h", "cuda_bf16.h", "cuda_fp8.h")
    static_shared_limit = 48 * 1024  # more needs dynamic shared memory + an opt-in attribute
    shuffles = {
        "xor": "__shfl_xor_sync(0xffffffffu, {x}, {off}, {w})",
        "down": "__shfl_down_sync(0xffffffffu, {x}, {off}, {w})",
        "idx": "__shfl_sync(0xffffffffu, {x}, {off}, {w})",
    }
    type_names = {**CStyleRenderer.type_names, "f16": "__half", "bf16": "__nv_bfloat16",
                  "f8e4m3fn": "__nv_fp8_storage_t", "f8e5m2": "__nv_fp8_storage_t"}
    matrix_helpers = {**CUDA_MATRIX_HELPERS, **HOPPER_HELPERS, **CLUSTER_HELPERS}

    @property
    def matrix_preamble(self) -> str:   # type: ignore[override]
        """The tensor-map type and shared-address helper, when a Hopper helper is used."""
        return PREAMBLE if any(h in HOPPER_HELPERS or h in CLUSTER_HELPERS
                               for h in self._matrix_used) else ""
    low_float = {
        "f16": ("__half2float({x})", "__float2half_rn({x})"),
        "bf16": ("__bfloat162float({x})", "__float2bfloat16_rn({x})"),
        "f8e4m3fn": ("hal_f8e4m3fn_to_f32({x})",
                     "__nv_cvt_float_to_fp8({x}, __NV_SATFINITE, __NV_E4M3)"),
        "f8e5m2": ("hal_f8e5m2_to_f32({x})",
                   "__nv_cvt_float_to_fp8({x}, __NV_SATFINITE, __NV_E5M2)"),
    }


def render_cuda(kernel: Kernel, spec: DeviceSpec | None = None) -> str:
    """CUDA C++ source of one kernel (an extern "C" __global__ function plus helpers)."""
    return CudaRenderer().render(kernel, spec)


def render_cuda_module(kernels: Sequence[Kernel], spec: DeviceSpec | None = None) -> str:
    """One CUDA translation unit with several kernels (names must be unique)."""
    return CudaRenderer().render_module(kernels, spec)
