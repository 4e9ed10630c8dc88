"""HIP C++ from the kernel IR: `HipRenderer` (data over hal.render.cstyle) and `render_hip`.

ROCm 5.2 has hip_fp16.h and hip_bfloat16.h (RNE conversions) but no fp8 header, so both
fp8 directions use hal's shared plain-C helpers (RNE, satfinite). Shuffles take no mask;
the width is the kernel's (64 on wave64 devices). Static LDS covers the whole 64 KiB.
"""

from __future__ import annotations

from collections.abc import Sequence

from hal.backends.rocm.mma_helpers import HIP_MATRIX_HELPERS, PREAMBLE
from hal.devices.spec import DeviceSpec
from hal.kernel.ir import Kernel
from hal.render.cstyle import CStyleRenderer


class HipRenderer(CStyleRenderer):
    vendor = "hip"
    headers = ("hip/hip_runtime.h", "hip/hip_fp16.h", "hip/hip_bfloat16.h")
    static_shared_limit = 64 * 1024
    shuffles = {
        "xor": "__shfl_xor({x}, {off}, {w})",
        "down": "__shfl_down({x}, {off}, {w})",
        "idx": "__shfl({x}, {off}, {w})",
    }
    type_names = {**CStyleRenderer.type_names, "f16": "__half", "bf16": "hip_bfloat16",
                  "f8e4m3fn": "unsigned char", "f8e5m2": "unsigned char"}
    matrix_helpers = HIP_MATRIX_HELPERS
    matrix_preamble = PREAMBLE
    low_float = {
        **CStyleRenderer.low_float,
        "f16": ("__half2float({x})", "__float2half({x})"),
        "bf16": ("static_cast<float>({x})", "hip_bfloat16({x})"),
    }


def render_hip(kernel: Kernel, spec: DeviceSpec | None = None) -> str:
    """HIP C++ source of one kernel (an extern "C" __global__ function plus helpers)."""
    return HipRenderer().render(kernel, spec)


def render_hip_module(kernels: Sequence[Kernel], spec: DeviceSpec | None = None) -> str:
    """One HIP translation unit with several kernels (names must be unique)."""
    return HipRenderer().render_module(kernels, spec)
